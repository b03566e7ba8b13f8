"""Redemptions: reserve → fulfil → complete, cancel, limits, audience, stock, expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from alliance.db.engine import Database
from alliance.errors import (
    Forbidden,
    IdempotencyKeyReused,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    LimitReached,
    NotAvailable,
    NotEligible,
    NotFound,
    OutOfStock,
)
from alliance.ledger.holds import capture_hold, void_hold
from alliance.ledger.service import spend_points
from alliance.rewards.catalog import archive_reward
from alliance.rewards.models import LimitPeriod, RewardKind
from alliance.rewards.redemptions import (
    Shipment,
    cancel_redemption,
    complete_redemption,
    coupons_by_redemption,
    fulfil_redemption,
    release_expired_redemptions,
    reserve_reward,
)
from tests.factories import (
    OPERATOR,
    make_ladder,
    make_program,
    member_actor,
    merchant_actor,
    qualify,
)
from tests.rewards.helpers import account, member_with_points, reserve, setup, stock


async def test_reserve_fulfil_complete(db: Database) -> None:
    program, reward, membership = await setup(db, points=500, stock=3)
    merchant = merchant_actor(program.merchant_id)
    reserved = await reserve(db, program, reward, membership)
    red = reserved.redemption
    assert (red.status, red.points, reserved.replayed) == ("reserved", 100, False)
    assert await account(db, membership) == (500, 100)  # held, not spent
    assert await stock(db, reward) == (2, 1)

    fulfilled = await fulfil_redemption(db, merchant, redemption_id=red.id)
    assert (fulfilled.status, fulfilled.fulfilment) == ("fulfilled", "coupon")
    coupon = (await coupons_by_redemption(db, OPERATOR, [red.id]))[red.id]
    assert coupon.status == "issued"
    assert len(coupon.code) == 19
    again = await fulfil_redemption(db, merchant, redemption_id=red.id)
    assert again.fulfilled_at == fulfilled.fulfilled_at  # a replay changes nothing

    completed = await complete_redemption(db, merchant, redemption_id=red.id)
    assert completed.status == "completed"
    assert completed.transaction_id is not None
    assert await account(db, membership) == (400, 0)
    assert await stock(db, reward) == (2, 1)
    replay = await complete_redemption(db, merchant, redemption_id=red.id)
    assert replay.transaction_id == completed.transaction_id


async def test_reservation_is_idempotent_by_key(db: Database) -> None:
    program, reward, membership = await setup(db)
    first = await reserve(db, program, reward, membership, key="k1")
    again = await reserve(db, program, reward, membership, key="k1")
    assert (again.redemption.id, again.replayed) == (first.redemption.id, True)
    assert await stock(db, reward) == (9, 1)
    other = await setup(db)
    with pytest.raises(IdempotencyKeyReused):  # the same key for another reward
        await reserve_reward(db, merchant_actor(program.merchant_id),
                             membership_id=membership.id, reward_id=other[1].id,
                             idempotency_key="k1")  # fmt: skip


async def test_held_points_cannot_be_spent_elsewhere(db: Database) -> None:
    program, reward, membership = await setup(db, points=150)
    merchant = merchant_actor(program.merchant_id)
    red = (await reserve(db, program, reward, membership)).redemption
    with pytest.raises(InsufficientPoints):
        await spend_points(db, merchant, membership_id=membership.id, points=51, reason="x",
                           idempotency_key="elsewhere")  # fmt: skip
    with pytest.raises(InsufficientPoints):  # not on a second reward either
        await reserve(db, program, reward, membership)
    # Nor through the counter discount's hold operations.
    with pytest.raises(Inactive):
        await capture_hold(db, merchant, hold_id=red.hold_id)
    with pytest.raises(Inactive):
        await void_hold(db, merchant, hold_id=red.hold_id)
    assert await account(db, membership) == (150, 100)
    await spend_points(db, merchant, membership_id=membership.id, points=50, reason="x",
                       idempotency_key="fits")  # fmt: skip
    assert await account(db, membership) == (100, 100)


async def test_cancel_gives_points_and_stock_back(db: Database) -> None:
    program, reward, membership = await setup(db, stock=1)
    member = member_actor(membership, program.merchant_id)
    red = (await reserve(db, program, reward, membership)).redemption
    with pytest.raises(OutOfStock):
        await reserve(db, program, reward, await member_with_points(db, program))
    cancelled = await cancel_redemption(db, member, redemption_id=red.id)
    assert cancelled.status == "cancelled"
    assert await account(db, membership) == (1000, 0)
    assert await stock(db, reward) == (1, 0)
    await reserve(db, program, reward, membership)  # the unit is back


async def test_shipped_rewards_need_a_shipment(db: Database) -> None:
    program, reward, membership = await setup(db, kind=RewardKind.GOODS)
    merchant = merchant_actor(program.merchant_id)
    red = (await reserve(db, program, reward, membership)).redemption
    with pytest.raises(InvalidInput):
        await fulfil_redemption(db, merchant, redemption_id=red.id)
    shipped = await fulfil_redemption(db, merchant, redemption_id=red.id,
                                      shipment=Shipment("SF Express", "SF123"))  # fmt: skip
    assert (shipped.fulfilment, shipped.carrier, shipped.tracking_number) == (
        "shipment", "SF Express", "SF123")  # fmt: skip
    assert await coupons_by_redemption(db, OPERATOR, [red.id]) == {}
    assert (await complete_redemption(db, merchant, redemption_id=red.id)).status == "completed"


async def test_limits_per_member_in_all_and_per_period(db: Database) -> None:
    program, reward, membership = await setup(db, limit_total=3, limit_per_period=2,
                                              limit_period=LimitPeriod.DAY)  # fmt: skip
    merchant = merchant_actor(program.merchant_id)
    first = (await reserve(db, program, reward, membership)).redemption
    await reserve(db, program, reward, membership)
    with pytest.raises(LimitReached):
        await reserve(db, program, reward, membership)  # two a day
    await cancel_redemption(db, merchant, redemption_id=first.id)
    await reserve(db, program, reward, membership)  # a cancelled one does not count
    # Yesterday's redemptions count in all, not today.
    await db.fetch_one("UPDATE redemption SET created_at = created_at - interval '2 days'"
                       " RETURNING id")  # fmt: skip
    await reserve(db, program, reward, membership)
    with pytest.raises(LimitReached):
        await reserve(db, program, reward, membership)  # three in all
    other = await member_with_points(db, program)
    await reserve(db, program, reward, other)  # limits are per member


async def test_concurrent_reservations_of_one_member_keep_its_limit(db: Database) -> None:
    program, reward, membership = await setup(db, points=10_000, stock=None, limit_total=2)
    outcomes = await asyncio.gather(
        *(reserve(db, program, reward, membership) for _ in range(12)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 2
    assert all(isinstance(o, LimitReached) for o in outcomes if isinstance(o, BaseException))
    assert await stock(db, reward) == (None, 2)


async def test_audience_window_and_archive(db: Database) -> None:
    program = await make_program(db)
    await make_ladder(db, program)
    now = datetime.now(UTC)
    from tests.rewards.helpers import make_reward

    gold_only = await make_reward(db, program, tier_codes=("gold", "platinum"))
    later = await make_reward(db, program, valid_from=now + timedelta(days=1))
    membership = await member_with_points(db, program)
    with pytest.raises(NotEligible):
        await reserve(db, program, gold_only, membership)
    await qualify(db, membership, program, spend=1000)
    await reserve(db, program, gold_only, membership)
    with pytest.raises(NotAvailable):
        await reserve(db, program, later, membership)
    await archive_reward(db, merchant_actor(program.merchant_id), reward_id=gold_only.id)
    with pytest.raises(NotAvailable):
        await reserve(db, program, gold_only, membership)


async def test_who_may_reserve(db: Database) -> None:
    program, reward, membership = await setup(db)
    elsewhere = await make_program(db)
    other_reward = (await setup(db))[1]
    with pytest.raises(Forbidden):  # another merchant's reward: only the member pays for it
        await reserve(db, program, other_reward, membership)
    with pytest.raises(NotFound):  # another merchant's member
        await reserve_reward(db, merchant_actor(elsewhere.merchant_id),
                             membership_id=membership.id, reward_id=reward.id,
                             idempotency_key="x")  # fmt: skip
    member = member_actor(membership, program.merchant_id)
    own = await reserve_reward(db, member, membership_id=membership.id, reward_id=reward.id,
                               idempotency_key="app-1")  # fmt: skip
    assert own.redemption.status == "reserved"


async def test_expired_reservations_are_released_once_by_concurrent_jobs(
    db: Database,
) -> None:
    program, reward, _ = await setup(db, stock=40)
    members = [await member_with_points(db, program, 300) for _ in range(10)]
    for membership in members:
        for _ in range(3):
            await reserve(db, program, reward, membership)
    assert await stock(db, reward) == (10, 30)
    later = datetime.now(UTC) + timedelta(hours=1)
    released = await asyncio.gather(
        *(release_expired_redemptions(db, now=later, batch_size=4) for _ in range(3))
    )
    leftover = await release_expired_redemptions(db, now=later)
    assert sum(released) + leftover == 30
    assert await stock(db, reward) == (40, 0)
    for membership in members:
        assert await account(db, membership) == (300, 0)
    row = await db.fetch_one("SELECT count(*) FROM redemption WHERE status = 'expired'")
    assert row == (30,)


async def test_the_holds_job_leaves_reward_holds_to_the_rewards_job(db: Database) -> None:
    from alliance.ledger.holds import release_expired_holds

    program, reward, membership = await setup(db)
    await reserve(db, program, reward, membership)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await release_expired_holds(db, now=later) == 0
    assert await account(db, membership) == (1000, 100)
    assert await release_expired_redemptions(db, now=later) == 1
    assert await account(db, membership) == (1000, 0)
    assert await stock(db, reward) == (10, 0)
