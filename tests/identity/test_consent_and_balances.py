"""Consent decides what other merchants' programs show; allianceBalances in one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.errors import InvalidInput
from alliance.identity.balances import AllianceBalances, BalanceLine
from alliance.identity.models import ConsentPurpose
from alliance.identity.service import set_consent
from alliance.members.queries import MembershipRecord
from alliance.programs.models import ExpiryPolicy
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    ALLIANCE_FINANCE,
    OPERATOR,
    give_points,
    make_ladder,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
    qualify,
)
from tests.graphql.helpers import error_codes, gid, ok, run
from tests.identity.helpers import same_person

BALANCES = """query($m: ID) { allianceBalances(membershipId: $m, expiringWithinDays: 30) {
    totalValue currency expiringPoints member { id }
    lines { edges { node { programName merchant { name } own membershipId memberNumber
            points value expiringPoints nextExpiry tierCode } } } } }"""


async def _person(
    db: Database, programs: int
) -> tuple[list[ProgramRecord], list[MembershipRecord]]:
    """One member with a membership in each of `programs` programs of distinct merchants,
    holding 100, 200, … points (points worth 0.01, 0.02, …)."""
    made = [
        await make_program(db, point_value=Decimal(n + 1) / 100,
                           expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=10)
        for n in range(programs)
    ]  # fmt: skip
    memberships = [await make_membership(db, program) for program in made]
    for membership in memberships[1:]:
        await same_person(db, membership.id, memberships[0].member_id)
    for n, (membership, program) in enumerate(zip(memberships, made, strict=True)):
        await give_points(db, membership, program, 100 * (n + 1))
    return made, memberships


def _merchant(program: ProgramRecord) -> Actor:
    return merchant_actor(program.merchant_id)


def _nodes(balances: dict[str, Any]) -> dict[str, Any]:
    """The answer with `lines` as the list of its nodes (one page: every line)."""
    connection = balances["lines"]
    return {**balances, "lines": [edge["node"] for edge in connection["edges"]]}


async def _balances(db: Database, actor: Actor, membership: MembershipRecord) -> dict[str, Any]:
    data = await ok(db, actor, BALANCES, {"m": gid("Membership", membership.id)})
    return _nodes(data["allianceBalances"])


async def _own_balances(db: Database, member: Actor) -> dict[str, Any]:
    """What a member token sees of itself (no membershipId)."""
    return _nodes((await ok(db, member, BALANCES, {"m": None}))["allianceBalances"])


class TestAllianceBalances:
    async def test_member_sees_every_linked_program_once_consented(self, db: Database) -> None:
        programs, memberships = await _person(db, 3)
        member = member_actor(memberships[0], programs[0].merchant_id)
        before = await _own_balances(db, member)
        # Through merchant 0's app, without consent: merchant 0's program only.
        assert [line["points"] for line in before["lines"]] == [100]
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        data = await _own_balances(db, member)
        assert [line["points"] for line in data["lines"]] == [100, 200, 300]
        # 100 × 0.01 + 200 × 0.02 + 300 × 0.03
        assert Decimal(data["totalValue"]) == Decimal("14")
        assert data["currency"] == "CNY"
        assert data["expiringPoints"] == 600  # everything expires within 10 days
        assert [line["own"] for line in data["lines"]] == [True, False, False]
        # Never another merchant's member number or membership id.
        assert data["lines"][0]["memberNumber"] == memberships[0].member_number
        assert [line["memberNumber"] for line in data["lines"][1:]] == [None, None]
        assert [line["membershipId"] for line in data["lines"][1:]] == [None, None]

    async def test_withdrawal_takes_effect_on_the_very_next_request(self, db: Database) -> None:
        programs, memberships = await _person(db, 2)
        member = member_actor(memberships[0], programs[0].merchant_id)
        merchant = _merchant(programs[0])
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        assert len((await _balances(db, merchant, memberships[0]))["lines"]) == 2
        withdrawn = await ok(
            db, member,
            """mutation { withdrawConsent(input: {purpose: PARTNER_BALANCES}) {
               consent { active withdrawnAt } userErrors { code } } }""",
        )  # fmt: skip
        assert withdrawn["withdrawConsent"]["consent"]["active"] is False
        after = await _balances(db, merchant, memberships[0])
        assert [line["points"] for line in after["lines"]] == [100]
        # Granted again: visible again, at once.
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        assert len((await _balances(db, merchant, memberships[0]))["lines"]) == 2

    async def test_consent_is_per_merchant_and_per_purpose(self, db: Database) -> None:
        programs, memberships = await _person(db, 3)
        for program, membership in zip(programs, memberships, strict=True):
            await make_ladder(db, program)
            await qualify(db, membership, program, spend=1000)
        member = member_actor(memberships[0], programs[0].merchant_id)
        await set_consent(db, member, merchant_id=programs[1].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        # Merchant 0 was given nothing; merchant 1 balances but no tiers.
        assert len((await _balances(db, _merchant(programs[0]), memberships[0]))["lines"]) == 1
        lines = (await _balances(db, _merchant(programs[1]), memberships[1]))["lines"]
        assert [line["tierCode"] for line in lines] == [None, "gold", None]
        await set_consent(db, member, merchant_id=programs[1].merchant_id,
                          purpose=ConsentPurpose.SHARE_TIER, granted=True)  # fmt: skip
        lines = (await _balances(db, _merchant(programs[1]), memberships[1]))["lines"]
        assert [line["tierCode"] for line in lines] == ["gold", "gold", "gold"]

    async def test_operator_sees_all_and_finance_is_refused(self, db: Database) -> None:
        _, memberships = await _person(db, 2)
        data = await _balances(db, OPERATOR, memberships[1])
        assert [line["memberNumber"] for line in data["lines"]] == [
            m.member_number for m in memberships
        ]
        result = await run(db, ALLIANCE_FINANCE, BALANCES, {"m": gid("Membership", 1)})
        assert error_codes(result) == ["FORBIDDEN"]

    async def test_foreign_and_unknown_memberships_look_alike(self, db: Database) -> None:
        programs, memberships = await _person(db, 2)
        merchant = _merchant(programs[0])
        foreign = await ok(db, merchant, BALANCES, {"m": gid("Membership", memberships[1].id)})
        unknown = await ok(db, merchant, BALANCES, {"m": gid("Membership", 999_999)})
        assert foreign == unknown == {"allianceBalances": None}

    async def test_expiring_points_and_next_expiry(self, db: Database) -> None:
        _, memberships = await _person(db, 1)
        async with db.autocommit() as conn:
            await conn.execute(text("UPDATE lot SET expires_at = now() + interval '90 days'"))
        data = await _balances(db, OPERATOR, memberships[0])
        assert data["expiringPoints"] == 0
        assert data["lines"][0]["nextExpiry"] is None
        async with db.autocommit() as conn:
            await conn.execute(text("UPDATE lot SET expires_at = now() + interval '3 days'"))
        line = (await _balances(db, OPERATOR, memberships[0]))["lines"][0]
        assert line["expiringPoints"] == 100
        expiry = datetime.fromisoformat(line["nextExpiry"])
        assert abs(expiry - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)

    async def test_one_statement_whatever_the_number_of_programs(self, db: Database) -> None:
        counts = []
        for size in (1, 5):
            programs, memberships = await _person(db, size)
            member = member_actor(memberships[0], programs[0].merchant_id)
            await set_consent(db, member, merchant_id=programs[0].merchant_id,
                              purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
            query = """{ allianceBalances { totalValue
                lines { edges { node { points value expiringPoints } } } } }"""
            with db.count_statements() as counter:
                data = await ok(db, member, query)
            assert len(data["allianceBalances"]["lines"]["edges"]) == size
            # With tiers, the merchants and the member: a loader statement for each.
            with db.count_statements() as everything:
                await ok(db, member, BALANCES, {"m": None})
            counts.append((counter.count, everything.count))
        assert counts == [(1, 3), (1, 3)]


PAGE = """query($first: Int, $after: String) { allianceBalances { totalValue expiringPoints
    lines(first: $first, after: $after) { edges { cursor node { programId points } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""


class TestLinesConnection:
    async def test_pages_through_every_line_in_one_statement_each(self, db: Database) -> None:
        programs, memberships = await _person(db, 5)
        member = member_actor(memberships[0], programs[0].merchant_id)
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        everything = await ok(db, member, PAGE, {"after": None})  # no `first`
        whole = everything["allianceBalances"]["lines"]
        # Without `first`: every line in one page.
        assert [edge["node"]["points"] for edge in whole["edges"]] == [100, 200, 300, 400, 500]
        assert whole["pageInfo"]["hasNextPage"] is False
        assert whole["pageInfo"]["hasPreviousPage"] is False
        seen, after, pages = [], None, []
        while True:
            with db.count_statements() as counter:
                data = await ok(db, member, PAGE, {"first": 2, "after": after})
            assert counter.count == 1
            found = data["allianceBalances"]
            # The totals are the member's, whatever the page.
            assert found["totalValue"] == everything["allianceBalances"]["totalValue"]
            assert found["expiringPoints"] == 1500
            page = found["lines"]
            pages.append(len(page["edges"]))
            seen += [edge["node"]["programId"] for edge in page["edges"]]
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
            assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert pages == [2, 2, 1]
        assert seen == [gid("Program", program.id) for program in programs]
        empty = await ok(db, member, PAGE, {"first": 0, "after": None})
        assert empty["allianceBalances"]["lines"]["edges"] == []
        assert empty["allianceBalances"]["lines"]["pageInfo"]["hasNextPage"] is True

    async def test_a_cursor_names_a_program_and_fails_once_it_is_hidden(self, db: Database) -> None:
        programs, memberships = await _person(db, 3)
        member = member_actor(memberships[0], programs[0].merchant_id)
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        page = (await ok(db, member, PAGE, {"first": 2, "after": None}))["allianceBalances"]
        cursor = page["lines"]["pageInfo"]["endCursor"]  # the second program's line
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=False)  # fmt: skip
        hidden = await run(db, member, PAGE, {"first": 2, "after": cursor})
        assert error_codes(hidden) == ["INVALID_INPUT"]
        garbage = await run(db, member, PAGE, {"first": 2, "after": "not-a-cursor"})
        assert error_codes(garbage) == ["INVALID_INPUT"]
        too_many = await run(db, member, PAGE, {"first": 101, "after": None})
        assert error_codes(too_many) == ["INVALID_INPUT"]

    async def test_tiers_are_read_only_when_asked_fragments_included(self, db: Database) -> None:
        programs, memberships = await _person(db, 2)
        for program, membership in zip(programs, memberships, strict=True):
            await make_ladder(db, program)
            await qualify(db, membership, program, spend=1000)
        queries = {
            "plain": "{ allianceBalances { lines { edges { node { points } } } } }",
            "tier": "{ allianceBalances { lines { edges { node { points tierName } } } } }",
            "aliased": "{ allianceBalances { l: lines { e: edges { n: node { t: tierCode } } } } }",
            "fragment": """{ allianceBalances { lines { edges { node { ...L } } } } }
                fragment L on AllianceBalanceLine { tierCode }""",
            "inline": """{ allianceBalances { lines { edges {
                ... on AllianceBalanceLineEdge { node { tierCode } } } } } }""",
        }
        read_tiers: dict[str, list[bool]] = {}
        for _ in range(2):  # the second time from the cached document (the answer remembered)
            for name, query in queries.items():
                with db.count_statements() as counter:
                    await ok(db, OPERATOR, query.replace("allianceBalances", _of(memberships[0])))
                read = any("membership_tier" in sql for sql in counter.statements)
                read_tiers.setdefault(name, []).append(read)
        assert {name: read[0] for name, read in read_tiers.items() if read[0] == read[1]} == {
            "plain": False,
            "tier": True,
            "aliased": True,
            "fragment": True,
            "inline": True,
        }
        data = await _balances(db, OPERATOR, memberships[0])
        assert [line["tierCode"] for line in data["lines"]] == ["gold", "gold"]


def _of(membership: MembershipRecord) -> str:
    return f'allianceBalances(membershipId: "{gid("Membership", membership.id)}")'


class TestBalanceLinePages:
    """The domain's paging of the lines, without a database."""

    @staticmethod
    def _balances(programs: list[int]) -> AllianceBalances:
        lines = [
            BalanceLine(program, 1, "p", "points", Decimal("0.01"), True, program, "n", 10, 0,
                        0, None)
            for program in programs
        ]  # fmt: skip
        return AllianceBalances(1, lines, 30)

    def test_after_is_the_named_programs_line_not_an_order_of_ids(self) -> None:
        balances = self._balances([7, 3, 9, 5])  # in membership order, not program order
        assert [line.program_id for line in balances.page(2, None).items] == [7, 3]
        page = balances.page(2, 3)
        assert ([line.program_id for line in page.items], page.has_next_page) == ([9, 5], False)
        assert balances.page(10, 5).items == []
        with pytest.raises(InvalidInput):
            balances.page(2, 4)


class TestConsents:
    async def test_member_lists_own_consents_and_merchant_only_its_own(self, db: Database) -> None:
        programs, memberships = await _person(db, 2)
        member = member_actor(memberships[0], programs[0].merchant_id)
        for program in programs:
            for purpose in ConsentPurpose:
                await set_consent(db, member, merchant_id=program.merchant_id, purpose=purpose,
                                  granted=True)  # fmt: skip
        query = """query($m: ID, $after: String) { consents(memberId: $m, first: 2,
            after: $after) { edges { node { purpose merchant { id } } }
            pageInfo { hasNextPage endCursor } } }"""
        seen, after = [], None
        while True:
            page = (await ok(db, member, query, {"m": None, "after": after}))["consents"]
            seen += [edge["node"]["purpose"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert len(seen) == 6
        as_merchant = await ok(
            db, _merchant(programs[1]), query,
            {"m": gid("Member", memberships[0].member_id), "after": None},
        )  # fmt: skip
        edges = as_merchant["consents"]["edges"]
        merchant_ids = {edge["node"]["merchant"]["id"] for edge in edges}
        assert merchant_ids == {gid("Merchant", programs[1].merchant_id)}
