"""Everything at once on a few members and one small reward: reservations, fulfilments,
completions, cancellations, coupon uses, restocks, gifts, spends and both release jobs race;
no deadlock, no lost unit, books and stock consistent."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alliance.db.engine import Database
from alliance.errors import DomainError, RetryLater
from alliance.ledger.holds import release_expired_holds
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.rewards.catalog import update_reward
from alliance.rewards.gifting import give_points, set_gift_policy
from alliance.rewards.redemptions import (
    cancel_redemption,
    complete_redemption,
    coupons_by_redemption,
    fulfil_redemption,
    redeem_coupon,
    release_expired_redemptions,
)
from tests.factories import OPERATOR, make_program, merchant_actor
from tests.rewards.helpers import TERMS, make_reward, member_with_points, reserve, stock


async def test_mixed_races_on_a_small_reward(db: Database) -> None:
    rng = random.Random(20261125)
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    reward = await make_reward(db, program, stock=12, points_price=30)
    await set_gift_policy(db, merchant, program_id=program.id, enabled=True,
                          max_points_per_gift=50, daily_limit_points=10_000)  # fmt: skip
    members = [await member_with_points(db, program, 400) for _ in range(6)]
    redemptions: list[int] = []
    fulfilled: list[int] = []  # picked by completions and coupon uses, so most find work
    keys = iter(range(10**6))

    operations = ["reserve"] * 4 + ["fulfil"] * 3 + ["complete", "coupon"] * 2 + [
        "cancel", "gift", "spend", "release", "restock"]  # fmt: skip

    async def one(operation: str, days: int) -> None:
        match operation:
            case "reserve":
                done = await reserve(db, program, reward, rng.choice(members))
                redemptions.append(done.redemption.id)
            case "fulfil" if redemptions:
                chosen = rng.choice(redemptions)
                await fulfil_redemption(db, merchant, redemption_id=chosen)
                fulfilled.append(chosen)
            case "complete" if fulfilled:
                await complete_redemption(db, merchant, redemption_id=rng.choice(fulfilled))
            case "cancel" if redemptions:
                await cancel_redemption(db, merchant, redemption_id=rng.choice(redemptions))
            case "coupon" if fulfilled:
                chosen = rng.choice(fulfilled)
                coupon = (await coupons_by_redemption(db, OPERATOR, [chosen])).get(chosen)
                if coupon is not None:
                    await redeem_coupon(db, merchant, code=coupon.code, store="s")
            case "gift":
                a, b = rng.sample(members, 2)
                await give_points(db, merchant, from_membership_id=a.id, to_membership_id=b.id,
                                  points=rng.randint(1, 50),
                                  idempotency_key=f"g{next(keys)}")  # fmt: skip
            case "spend":
                await spend_points(db, merchant, membership_id=rng.choice(members).id,
                                   points=rng.randint(1, 40), reason="r",
                                   idempotency_key=f"s{next(keys)}")  # fmt: skip
            case "restock":  # a new version with 2 more units, while the slots are busy
                await update_reward(db, merchant, reward_id=reward.id,
                                    terms=replace(TERMS, points_price=30), add_stock=2)  # fmt: skip
            case "release":
                # Now (nothing due yet), or 40 days on: every open redemption is due.
                later = datetime.now(UTC) + timedelta(days=days)
                await asyncio.gather(release_expired_redemptions(db, now=later),
                                     release_expired_holds(db, now=later))  # fmt: skip

    for _ in range(8):  # waves of 30 operations at once
        wave = [(rng.choice(operations), rng.choice([0, 0, 0, 40])) for _ in range(30)]
        outcomes = await asyncio.gather(*(one(*op) for op in wave), return_exceptions=True)
        unexpected = [
            o for o in outcomes
            if isinstance(o, BaseException)
            and (not isinstance(o, DomainError) or isinstance(o, RetryLater))
        ]  # fmt: skip
        assert unexpected == [], "\n".join(str(o) for o in unexpected[:3])
    assert await verify_ledger(db) == []
    left, standing = await stock(db, reward)
    issued = await db.fetch_one("SELECT stock_issued FROM reward WHERE id = %(r)s",
                                {"r": reward.id})  # fmt: skip
    assert left is not None
    assert issued is not None
    assert issued[0] > 12  # restocked meanwhile
    assert left + standing == issued[0]
    row = await db.fetch_one(
        "SELECT count(*) FROM redemption WHERE reward_id = %(r)s"
        " AND status IN ('reserved', 'fulfilled', 'completed')", {"r": reward.id},
    )  # fmt: skip
    assert row == (standing,)
    statuses: dict[str, int] = dict(await db.fetch_all(
        "SELECT status, count(*) FROM redemption GROUP BY status", {}))  # fmt: skip
    # The races did happen: most ways out of a reservation were taken (which ones depends
    # on how the waves interleave, so not all three every time).
    assert len({"completed", "cancelled", "expired"} & set(statuses)) >= 2, statuses
    gifts = await db.fetch_one("SELECT count(*) FROM gift", {})
    assert gifts is not None
    assert gifts[0] > 0
