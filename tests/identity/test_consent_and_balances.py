"""Consent decides what other merchants' programs show; allianceBalances in one statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from alliance.auth.actor import Actor
from alliance.db.engine import Database
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
    lines { programName merchant { name } own membershipId memberNumber points value
            expiringPoints nextExpiry tierCode } } }"""


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


async def _balances(db: Database, actor: Actor, membership: MembershipRecord) -> dict[str, Any]:
    data = await ok(db, actor, BALANCES, {"m": gid("Membership", membership.id)})
    found: dict[str, Any] = data["allianceBalances"]
    return found


class TestAllianceBalances:
    async def test_member_sees_every_linked_program_once_consented(self, db: Database) -> None:
        programs, memberships = await _person(db, 3)
        member = member_actor(memberships[0], programs[0].merchant_id)
        before = await ok(db, member, BALANCES, {"m": None})
        # Through merchant 0's app, without consent: merchant 0's program only.
        assert [line["points"] for line in before["allianceBalances"]["lines"]] == [100]
        await set_consent(db, member, merchant_id=programs[0].merchant_id,
                          purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
        data = (await ok(db, member, BALANCES, {"m": None}))["allianceBalances"]
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
            query = """{ allianceBalances { totalValue lines { points value expiringPoints } } }"""
            with db.count_statements() as counter:
                data = await ok(db, member, query)
            assert len(data["allianceBalances"]["lines"]) == size
            # With tiers, the merchants and the member: a loader statement for each.
            with db.count_statements() as everything:
                await ok(db, member, BALANCES, {"m": None})
            counts.append((counter.count, everything.count))
        assert counts == [(1, 3), (1, 3)]


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
