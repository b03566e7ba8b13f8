"""Tiers through GraphQL: setting a ladder, a membership's tier, history and progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from alliance.db.engine import Database
from alliance.programs.queries import ProgramRecord
from alliance.tiers.review import review_tiers
from tests.factories import (
    OPERATOR,
    make_ladder,
    make_membership,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
    qualify,
)
from tests.graphql.helpers import gid, ok

SET_LADDER = """mutation($input: SetTierLadderInput!) { setTierLadder(input: $input) {
    program { id tiers { edges { node { code name rank threshold multiplier benefits } } } }
    policy { basis windowDays graceDays version }
    userErrors { code field } } }"""

LADDER_TIERS: list[dict[str, Any]] = [
    {"code": "regular", "name": "普通", "threshold": "0"},
    {"code": "gold", "name": "黄金", "threshold": "1000", "multiplier": "1.5",
     "benefits": ["priority seating"]},
    {"code": "platinum", "name": "白金", "threshold": "5000", "multiplier": "2"},
]  # fmt: skip
LADDER_INPUT = {"basis": "SPEND", "windowDays": 365, "graceDays": 30, "tiers": LADDER_TIERS}

PROGRESS = """query($id: ID!) { membership(id: $id) {
    tier { code multiplier }
    tierProgress { qualifyingTotal neededForNext windowStart downgradePendingUntil
                   current { code } next { code threshold } }
    tierHistory { edges { node { reason qualifyingTotal from { code ladderVersion }
                                 to { code } } } } } }"""


class TestSetTierLadder:
    async def test_sets_and_returns_the_ladder(self, db: Database) -> None:
        program = await make_program(db)
        program_id = gid("Program", program.id)
        data = await ok(db, merchant_actor(program.merchant_id), SET_LADDER,
                        {"input": {"programId": program_id, **LADDER_INPUT}})  # fmt: skip
        payload = data["setTierLadder"]
        assert payload["userErrors"] == []
        assert payload["policy"] == {"basis": "SPEND", "windowDays": 365, "graceDays": 30,
                                     "version": 1}  # fmt: skip
        tiers = [edge["node"] for edge in payload["program"]["tiers"]["edges"]]
        assert tiers == [
            {"code": "regular", "name": "普通", "rank": 0, "threshold": "0", "multiplier": "1",
             "benefits": []},
            {"code": "gold", "name": "黄金", "rank": 1, "threshold": "1000",
             "multiplier": "1.5", "benefits": ["priority seating"]},
            {"code": "platinum", "name": "白金", "rank": 2, "threshold": "5000",
             "multiplier": "2", "benefits": []},
        ]  # fmt: skip

    async def test_rule_breaks_are_user_errors_with_their_field(self, db: Database) -> None:
        program = await make_program(db)
        falling = {"code": "platinum", "name": "白金", "threshold": "900"}
        bad = {**LADDER_INPUT, "tiers": [*LADDER_TIERS[:2], falling]}
        data = await ok(db, merchant_actor(program.merchant_id), SET_LADDER,
                        {"input": {"programId": gid("Program", program.id), **bad}})  # fmt: skip
        assert data["setTierLadder"]["userErrors"] == [
            {"code": "INVALID_INPUT", "field": ["input", "tiers", "2", "threshold"]}
        ]
        assert data["setTierLadder"]["program"] is None

    async def test_a_malformed_decimal_is_a_user_error_too(self, db: Database) -> None:
        program = await make_program(db)
        tiers = [{"code": "regular", "name": "普通", "threshold": "0", "multiplier": "NaN"}]
        data = await ok(db, merchant_actor(program.merchant_id), SET_LADDER,
                        {"input": {"programId": gid("Program", program.id),
                                   **LADDER_INPUT, "tiers": tiers}})  # fmt: skip
        assert data["setTierLadder"]["userErrors"] == [
            {"code": "INVALID_INPUT", "field": ["input", "tiers", "0", "multiplier"]}
        ]

    async def test_tier_pages_by_rank(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        query = """query($id: ID!, $after: String) { node(id: $id) { ... on Program {
            tierPolicy { version } tiers(first: 2, after: $after) {
            edges { node { code } } pageInfo { hasNextPage endCursor } } } } }"""
        first = (await ok(db, OPERATOR, query, {"id": gid("Program", program.id)}))["node"]
        assert [e["node"]["code"] for e in first["tiers"]["edges"]] == ["regular", "gold"]
        assert first["tiers"]["pageInfo"]["hasNextPage"] is True
        after = first["tiers"]["pageInfo"]["endCursor"]
        rest = await ok(db, OPERATOR, query, {"id": gid("Program", program.id), "after": after})
        assert [e["node"]["code"] for e in rest["node"]["tiers"]["edges"]] == ["platinum"]


class TestMembershipTier:
    async def test_progress_figures(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=30)
        membership = await make_membership(db, program)
        actor = member_actor(membership, program.merchant_id)
        await qualify(db, membership, program, spend=Decimal("1234.56"))
        data = await ok(db, actor, PROGRESS, {"id": gid("Membership", membership.id)})
        mine = data["membership"]
        assert mine["tier"] == {"code": "gold", "multiplier": "1.5"}
        progress = mine["tierProgress"]
        assert {k: v for k, v in progress.items() if k != "windowStart"} == {
            "qualifyingTotal": "1234.56", "neededForNext": "3765.44",
            "downgradePendingUntil": None, "current": {"code": "gold"},
            "next": {"code": "platinum", "threshold": "5000"},
        }  # fmt: skip
        window_start = datetime.fromisoformat(progress["windowStart"])
        assert abs(window_start - (datetime.now(UTC) - timedelta(days=365))) < timedelta(minutes=1)
        assert [edge["node"] for edge in mine["tierHistory"]["edges"]] == [
            {"reason": "QUALIFIED", "qualifyingTotal": "1234.56",
             "from": {"code": "regular", "ladderVersion": 1}, "to": {"code": "gold"}}
        ]  # fmt: skip

    async def test_top_tier_and_pending_downgrade(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=30)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=6000)
        await qualify(db, membership, program, spend=-1500)
        await review_tiers(db)
        data = await ok(db, OPERATOR, PROGRESS, {"id": gid("Membership", membership.id)})
        progress = data["membership"]["tierProgress"]
        assert (progress["current"], progress["next"], progress["neededForNext"]) == (
            {"code": "platinum"}, None, None
        )  # fmt: skip
        pending = datetime.fromisoformat(progress["downgradePendingUntil"])
        assert abs(pending - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
        history = [
            edge["node"]["to"]["code"] for edge in data["membership"]["tierHistory"]["edges"]
        ]
        assert history == ["platinum"]

    async def test_no_ladder_no_tier(self, db: Database) -> None:
        membership = await make_membership(db)
        data = await ok(db, OPERATOR, PROGRESS, {"id": gid("Membership", membership.id)})
        assert data["membership"] == {"tier": None, "tierProgress": None,
                                      "tierHistory": {"edges": []}}  # fmt: skip

    async def test_history_is_newest_first_and_pages(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=0)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=1000)
        await qualify(db, membership, program, spend=4000)
        await qualify(db, membership, program, spend=-4500)
        await review_tiers(db)
        query = """query($id: ID!, $after: String) { membership(id: $id) {
            tierHistory(first: 2, after: $after) { edges { node { reason to { code } } }
            pageInfo { hasNextPage endCursor } } } }"""
        first = await ok(db, OPERATOR, query, {"id": gid("Membership", membership.id)})
        page = first["membership"]["tierHistory"]
        assert [(e["node"]["reason"], e["node"]["to"]["code"]) for e in page["edges"]] == [
            ("DOWNGRADED", "regular"), ("QUALIFIED", "platinum")
        ]  # fmt: skip
        rest = await ok(db, OPERATOR, query, {"id": gid("Membership", membership.id),
                                              "after": page["pageInfo"]["endCursor"]})  # fmt: skip
        assert [e["node"]["to"]["code"] for e in rest["membership"]["tierHistory"]["edges"]] == [
            "gold"
        ]

    async def test_a_tier_is_a_node(self, db: Database) -> None:
        program = await make_program(db)
        ladder = await make_ladder(db, program)
        data = await ok(db, OPERATOR, "query($id: ID!) { node(id: $id) { ... on Tier { code } } }",
                        {"id": gid("Tier", ladder.tiers[2].id)})  # fmt: skip
        assert data["node"] == {"code": "platinum"}


NESTED = """
query($programs: Int!, $memberships: Int!) {
  programs(first: $programs) { edges { node {
    tierPolicy { basis }
    tiers { edges { node { code multiplier } } }
    memberships(first: $memberships) { edges { node {
      tier { code }
      tierProgress { qualifyingTotal neededForNext current { code } next { code } }
      tierHistory(first: 3) { edges { node { reason from { code } to { code } } } }
    } } }
  } } }
}"""


async def _populate(db: Database, programs: int, members: int) -> list[ProgramRecord]:
    made = []
    merchant = await make_merchant(db)
    for _ in range(programs):
        program = await make_program(db, merchant)
        await make_ladder(db, program)
        made.append(program)
        for n in range(members):
            membership = await make_membership(db, program)
            for spend in (700, 1100 * n):
                await qualify(db, membership, program, spend=spend)
    return made


async def test_nested_tier_query_is_constant_in_rows(db: Database) -> None:
    await _populate(db, programs=1, members=2)
    with db.count_statements() as small:
        data: dict[str, Any] = await ok(db, OPERATOR, NESTED, {"programs": 10, "memberships": 10})
    assert len(data["programs"]["edges"]) == 1
    await _populate(db, programs=3, members=6)
    with db.count_statements() as large:
        data = await ok(db, OPERATOR, NESTED, {"programs": 10, "memberships": 10})
    programs = data["programs"]["edges"]
    assert len(programs) == 4
    members = [edge["node"] for edge in programs[-1]["node"]["memberships"]["edges"]]
    assert [m["tier"]["code"] for m in members] == [
        "regular", "gold", "gold", "gold", "platinum", "platinum"
    ]  # fmt: skip
    assert members[-1]["tierHistory"]["edges"] == [
        {"node": {"reason": "QUALIFIED", "from": {"code": "regular"}, "to": {"code": "platinum"}}}
    ]
    # programs, ladders, tiers of programs, memberships, held tiers, standings (with their
    # tiers), histories (with theirs): one statement each, whatever the number of rows.
    assert small.count == large.count == 7, large.statements
