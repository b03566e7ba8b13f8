"""A reward of merchant B paid with program A points (cross-brand redemption, the
"B reward" form): price conversion, who may, holds, completion with its settlement
obligation, cancel and expiry owing nothing, limits across memberships, visibility."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    LimitReached,
    NotAccepted,
    NotEligible,
    NotFound,
)
from alliance.exchange.service import set_partner_acceptance
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import MerchantRecord, ProgramRecord, merchants_by_id
from alliance.rewards.catalog import RewardRecord, prices_in
from alliance.rewards.redemptions import (
    Reservation,
    cancel_redemption,
    complete_redemption,
    coupons_by_redemption,
    fulfil_redemption,
    redeem_coupon,
    redemptions_by_id,
    release_expired_redemptions,
    reserve_reward,
)
from alliance.settlement.reconcile import reconcile_period
from tests.exchange.helpers import make_alliance
from tests.factories import (
    ALLIANCE_FINANCE,
    OPERATOR,
    make_ladder,
    make_program,
    member_actor,
    merchant_actor,
    qualify,
)
from tests.graphql.helpers import error_codes, gid, ok, run
from tests.rewards.helpers import account, make_reward, member_with_points, stock
from tests.settlement.helpers import settle, statement_lines


@dataclass
class Partners:
    a: ProgramRecord
    """The program whose points pay."""
    b: ProgramRecord
    """The reward's program."""
    paying: MembershipRecord
    """The member's membership in A."""
    own: MembershipRecord
    """The member's membership in B."""
    in_a_app: Actor
    in_b_app: Actor
    reward: RewardRecord


async def _partners(
    db: Database, values: tuple[str, str] = ("0.01", "0.02"), *, accepts: bool = True,
    price: int = 100, **terms: Any,
) -> Partners:  # fmt: skip
    alliance = await make_alliance(db, values, points=1000)
    a, b = alliance.programs
    paying, own = alliance.memberships
    reward = await make_reward(db, b, points_price=price, **terms)
    if accepts:
        await set_partner_acceptance(db, merchant_actor(b.merchant_id), program_id=a.id,
                                     accepts=True)  # fmt: skip
    return Partners(a, b, paying, own, alliance.member,
                    member_actor(own, b.merchant_id), reward)  # fmt: skip


_keys = iter(range(10**9))


async def _reserve(db: Database, who: Actor, membership: MembershipRecord,
                   reward: RewardRecord) -> Reservation:  # fmt: skip
    return await reserve_reward(db, who, membership_id=membership.id, reward_id=reward.id,
                                idempotency_key=f"p{next(_keys)}")  # fmt: skip


async def _obligations(db: Database) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await db.fetch_all(
        "SELECT transaction_id, kind, debtor_merchant_id, creditor_merchant_id, program_id,"
        " points, point_value, amount FROM settlement_obligation ORDER BY id")]  # fmt: skip


async def test_the_price_converts_at_point_values_rounded_up(db: Database) -> None:
    # 100 B points at 0.02 are worth 2.00; at 0.03 per A point that is 66.67: 67 points.
    p = await _partners(db, ("0.03", "0.02"))
    assert await prices_in(db, p.in_a_app, [(p.reward.id, p.a.id), (p.reward.id, p.b.id)]) == {
        (p.reward.id, p.a.id): 67,
        (p.reward.id, p.b.id): 100,
    }
    done = await _reserve(db, p.in_a_app, p.paying, p.reward)
    red = done.redemption
    assert (red.points, red.program_id, red.paid_program_id, red.partner_paid) == (
        67, p.b.id, p.a.id, True)  # fmt: skip
    assert await account(db, p.paying) == (1000, 67)  # held on the paying account
    assert await account(db, p.own) == (1000, 0)
    assert Decimal(67) * p.a.point_value >= Decimal(100) * p.b.point_value


async def test_completion_spends_the_points_and_owes_their_value(db: Database) -> None:
    p = await _partners(db)  # A at 0.01, B at 0.02: 200 A points
    red = (await _reserve(db, p.in_b_app, p.paying, p.reward)).redemption
    seller = merchant_actor(p.b.merchant_id)
    await fulfil_redemption(db, seller, redemption_id=red.id)
    assert await _obligations(db) == []  # nothing is owed while it may still be cancelled
    done = await complete_redemption(db, seller, redemption_id=red.id)
    assert done.status == "completed"
    assert await account(db, p.paying) == (800, 0)
    transaction = await db.fetch_one(
        "SELECT kind, details->>'partner_merchant_id', details->>'redemption_id'"
        " FROM ledger_transaction WHERE id = %(t)s",
        {"t": done.transaction_id},
    )
    assert tuple(transaction or ()) == (
        "partner_redemption", str(p.b.merchant_id), str(red.id))  # fmt: skip
    assert await _obligations(db) == [
        (done.transaction_id, "partner_redemption", p.a.merchant_id, p.b.merchant_id, p.a.id,
         200, Decimal("0.01"), Decimal("2.00")),
    ]  # fmt: skip
    # Completing again changes nothing (and owes nothing more).
    again = await complete_redemption(db, seller, redemption_id=red.id)
    assert again.transaction_id == done.transaction_id
    assert len(await _obligations(db)) == 1


async def test_a_coupon_used_at_the_counter_completes_it(db: Database) -> None:
    p = await _partners(db)
    red = (await _reserve(db, p.in_a_app, p.paying, p.reward)).redemption
    seller = merchant_actor(p.b.merchant_id)
    await fulfil_redemption(db, seller, redemption_id=red.id)
    coupon = (await coupons_by_redemption(db, p.in_a_app, [red.id]))[red.id]
    await redeem_coupon(db, seller, code=coupon.code, store="front")
    [(_, kind, debtor, creditor, *_)] = await _obligations(db)
    assert (kind, debtor, creditor) == ("partner_redemption", p.a.merchant_id, p.b.merchant_id)


async def test_cancelled_and_expired_ones_owe_nothing(db: Database) -> None:
    p = await _partners(db)
    cancelled = (await _reserve(db, p.in_a_app, p.paying, p.reward)).redemption
    # The member cancels in the paying merchant's app too.
    await cancel_redemption(db, p.in_a_app, redemption_id=cancelled.id)
    lapsed = (await _reserve(db, p.in_b_app, p.paying, p.reward)).redemption
    assert await release_expired_redemptions(db, now=datetime.now(UTC) + timedelta(hours=2)) == 1
    found = await redemptions_by_id(db, OPERATOR, [cancelled.id, lapsed.id])
    assert (found[cancelled.id].status, found[lapsed.id].status) == ("cancelled", "expired")
    assert await account(db, p.paying) == (1000, 0)
    assert await stock(db, p.reward) == (10, 0)
    assert await _obligations(db) == []


async def test_who_may_pay_with_partner_points(db: Database) -> None:
    p = await _partners(db)
    with pytest.raises(Forbidden):  # the paying merchant, for its member: no
        await _reserve(db, merchant_actor(p.a.merchant_id), p.paying, p.reward)
    with pytest.raises(NotFound):  # the reward's merchant never handles A's memberships
        await _reserve(db, merchant_actor(p.b.merchant_id), p.paying, p.reward)
    third = await make_program(db)
    stranger_app = member_actor(p.paying, third.merchant_id)
    with pytest.raises(NotFound):  # a token of a third merchant's app
        await _reserve(db, stranger_app, p.paying, p.reward)
    other = await member_with_points(db, p.a, 1000)  # someone else's membership
    with pytest.raises(NotFound):
        await _reserve(db, p.in_a_app, other, p.reward)
    assert await _reserve(db, p.in_a_app, p.paying, p.reward)
    assert await _reserve(db, p.in_b_app, p.paying, p.reward)


async def test_acceptance_and_its_range_are_the_rewards_merchants(db: Database) -> None:
    p = await _partners(db, accepts=False)
    with pytest.raises(NotAccepted):
        await _reserve(db, p.in_a_app, p.paying, p.reward)
    assert await prices_in(db, p.in_a_app, [(p.reward.id, p.a.id)]) == {}
    await set_partner_acceptance(db, merchant_actor(p.b.merchant_id), program_id=p.a.id,
                                 accepts=True, max_points=150)  # fmt: skip
    with pytest.raises(InvalidInput, match="costs 200"):
        await _reserve(db, p.in_a_app, p.paying, p.reward)
    assert await prices_in(db, p.in_a_app, [(p.reward.id, p.a.id)]) == {}
    # The same merchant's other program is not a partner: its reward is not found.
    sibling = await make_program(db, await _merchant(db, p.a))
    sibling_reward = await make_reward(db, sibling)
    with pytest.raises(NotFound):
        await _reserve(db, p.in_a_app, p.paying, sibling_reward)
    assert await account(db, p.paying) == (1000, 0)


async def _merchant(db: Database, program: ProgramRecord) -> MerchantRecord:
    return (await merchants_by_id(db, OPERATOR, [program.merchant_id]))[program.merchant_id]


async def test_tier_audiences_are_the_rewards_programs(db: Database) -> None:
    p = await _partners(db, tier_codes=("gold", "platinum"))
    await make_ladder(db, p.b)
    with pytest.raises(NotEligible):
        await _reserve(db, p.in_a_app, p.paying, p.reward)
    await qualify(db, p.own, p.b, spend=1000)  # gold at B
    red = (await _reserve(db, p.in_a_app, p.paying, p.reward)).redemption
    assert red.paid_program_id == p.a.id


async def test_limits_count_the_member_across_memberships(db: Database) -> None:
    p = await _partners(db, limit_total=1)
    await _reserve(db, p.in_b_app, p.own, p.reward)  # with B's own points
    with pytest.raises(LimitReached):
        await _reserve(db, p.in_a_app, p.paying, p.reward)


async def test_concurrent_reservations_from_two_accounts_respect_the_limit(
    db: Database,
) -> None:
    p = await _partners(db, limit_total=1)

    async def attempt(who: Actor, membership: MembershipRecord) -> str:
        try:
            await _reserve(db, who, membership, p.reward)
        except DomainError as error:
            return error.code
        return "ok"

    for _ in range(5):
        outcomes = await asyncio.gather(attempt(p.in_a_app, p.paying), attempt(p.in_b_app, p.own))
        assert sorted(outcomes).count("ok") <= 1
        standing = await db.fetch_all(
            "SELECT id FROM redemption WHERE reward_id = %(r)s AND status = 'reserved'",
            {"r": p.reward.id},
        )
        assert len(standing) == 1
        await cancel_redemption(db, p.in_b_app,
                                redemption_id=standing[0][0])  # fmt: skip


async def test_who_sees_a_partner_paid_redemption(db: Database) -> None:
    p = await _partners(db)
    red = (await _reserve(db, p.in_a_app, p.paying, p.reward)).redemption
    for viewer, sees in (
        (p.in_a_app, True),  # the member, in either app
        (p.in_b_app, True),
        (merchant_actor(p.b.merchant_id), True),  # the reward's merchant fulfils it
        (merchant_actor(p.a.merchant_id), False),  # the paying merchant sees its ledger only
        (OPERATOR, True),
    ):
        assert (red.id in await redemptions_by_id(db, viewer, [red.id])) is sees, viewer.role


async def test_settlement_and_reconciliation_carry_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await _partners(db)
    seller = merchant_actor(p.b.merchant_id)
    for _ in range(3):
        red = (await _reserve(db, p.in_a_app, p.paying, p.reward)).redemption
        await fulfil_redemption(db, seller, redemption_id=red.id)
        await complete_redemption(db, seller, redemption_id=red.id)
    [period] = [closed for closed in await settle(db, monkeypatch) if closed.obligations]
    lines = await statement_lines(db, period.id)
    gross = [line for line in lines if line[2] == "payable" and line[0] == p.a.merchant_id]
    assert [(line[3], line[4], line[5], line[6], line[8]) for line in gross] == [
        (p.b.merchant_id, "partner_redemption", 3, 600, Decimal("6.00")),
    ]
    report = await reconcile_period(db, ALLIANCE_FINANCE, period_id=period.id)
    assert report.differences == []


REWARD = """query($r: ID!, $a: ID!, $b: ID!) { node(id: $r) { ... on Reward {
  inA: priceIn(programId: $a) inB: priceIn(programId: $b) } } }"""
RESERVE = """mutation($m: ID!, $r: ID!, $k: String!) {
  reserveReward(input: {membershipId: $m, rewardId: $r, idempotencyKey: $k}) {
    redemption { points paidProgram { id } reward { program { id } } }
    replayed userErrors { code field } } }"""


async def test_through_graphql(db: Database) -> None:
    p = await _partners(db)
    ids = {"r": gid("Reward", p.reward.id), "a": gid("Program", p.a.id),
           "b": gid("Program", p.b.id)}  # fmt: skip
    prices = (await ok(db, p.in_b_app, REWARD, ids))["node"]
    assert prices == {"inA": 200, "inB": 100}
    variables = {"m": gid("Membership", p.paying.id), "r": ids["r"], "k": "gql-1"}
    done = (await ok(db, p.in_b_app, RESERVE, variables))["reserveReward"]
    assert done["redemption"] == {
        "points": 200, "paidProgram": {"id": ids["a"]}, "reward": {"program": {"id": ids["b"]}},
    }  # fmt: skip
    replay = (await ok(db, p.in_b_app, RESERVE, variables))["reserveReward"]
    assert replay["replayed"] is True
    assert replay["redemption"] == done["redemption"]
    # An authorization error is a GraphQL error with its code, not a userError.
    refused = await run(db, merchant_actor(p.a.merchant_id), RESERVE, {**variables, "k": "x"})
    assert error_codes(refused) == ["FORBIDDEN"]
    unaccepted = await _partners(db, accepts=False)
    variables = {"m": gid("Membership", unaccepted.paying.id),
                 "r": gid("Reward", unaccepted.reward.id), "k": "gql-3"}  # fmt: skip
    done = (await ok(db, unaccepted.in_a_app, RESERVE, variables))["reserveReward"]
    assert done["userErrors"] == [{"code": "NOT_ACCEPTED", "field": ["input", "membershipId"]}]
