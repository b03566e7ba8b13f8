"""`alliance verify` finds corrupted rewards: stock, redemptions against holds, coupons,
gifts."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.ledger.verify import verify_ledger
from alliance.rewards.gifting import give_points, set_gift_policy
from alliance.rewards.redemptions import complete_redemption, fulfil_redemption
from tests.database import corrupt
from tests.factories import merchant_actor
from tests.rewards.helpers import member_with_points, reserve, setup

CORRUPTIONS = {
    "reward_stock_consistent": "UPDATE reward_stock_slot SET stock = stock + 1 WHERE slot = 3",
    "redemptions_match_holds": "UPDATE hold SET status = 'voided', closed_at = now()"
    " WHERE kind = 'reward' AND status = 'authorized'",
    "redemptions_of_their_reward": "UPDATE redemption SET program_id = program_id + 1000",
    "redemptions_spent_as_paid": "UPDATE ledger_transaction SET kind = 'award'"
    " WHERE id IN (SELECT transaction_id FROM redemption)",
    "coupons_follow_redemptions": "UPDATE coupon SET status = 'void'",
    "gifts_are_ledgered": "UPDATE gift SET points = points + 1",
}


async def _rewards_with_history(db: Database) -> None:
    program, reward, membership = await setup(db)
    red = (await reserve(db, program, reward, membership)).redemption
    await fulfil_redemption(db, merchant_actor(program.merchant_id), redemption_id=red.id)
    done = (await reserve(db, program, reward, membership)).redemption
    await fulfil_redemption(db, merchant_actor(program.merchant_id), redemption_id=done.id)
    await complete_redemption(db, merchant_actor(program.merchant_id), redemption_id=done.id)
    await set_gift_policy(
        db, merchant_actor(program.merchant_id), program_id=program.id, enabled=True,
        max_points_per_gift=100, daily_limit_points=200,
    )  # fmt: skip
    friend = await member_with_points(db, program, 0)
    await give_points(db, merchant_actor(program.merchant_id), from_membership_id=membership.id,
                      to_membership_id=friend.id, points=10, idempotency_key="g")  # fmt: skip


async def test_clean_rewards_have_no_violations(db: Database) -> None:
    await _rewards_with_history(db)
    assert await verify_ledger(db) == []


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
async def test_verify_finds_corruption(db: Database, check: str) -> None:
    await _rewards_with_history(db)
    await corrupt(db, CORRUPTIONS[check])
    found = {violation.check for violation in await verify_ledger(db)}
    assert check in found
    async with db.autocommit() as conn:  # leave a consistent database for the teardown
        await conn.execute(text(
            "TRUNCATE coupon, redemption, gift, hold, lot_consumption, lot, posting,"
            " ledger_transaction, outbox_event CASCADE"))  # fmt: skip
        await conn.execute(text("UPDATE account SET balance = 0, held = 0, debt = 0"
                                " WHERE kind = 'member'"))  # fmt: skip
        await conn.execute(text("TRUNCATE reward_stock_slot, reward_version, reward CASCADE"))
