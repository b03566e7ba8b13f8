"""Many members racing for a reward: the stock and every member's limit hold."""

from __future__ import annotations

import asyncio

from alliance.db.engine import Database
from alliance.errors import LimitReached, OutOfStock
from alliance.ledger.verify import verify_ledger
from alliance.rewards.redemptions import Reservation
from tests.factories import make_program
from tests.rewards.helpers import make_reward, member_with_points, reserve, stock


async def test_200_concurrent_reservations_of_a_stock_of_50(db: Database) -> None:
    program = await make_program(db)
    reward = await make_reward(db, program, stock=50, limit_total=1)
    members = [await member_with_points(db, program, 250) for _ in range(100)]
    # Every member asks twice at once: 200 reservations for 50 units, one per member.
    outcomes = await asyncio.gather(
        *(reserve(db, program, reward, membership) for membership in members * 2),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if not isinstance(o, Reservation)]
    assert len(won) == 50
    assert all(isinstance(o, OutOfStock | LimitReached) for o in refused), refused[:3]
    assert await stock(db, reward) == (0, 50)
    per_member = await db.fetch_all(
        "SELECT membership_id, count(*) FROM redemption WHERE reward_id = %(r)s"
        " GROUP BY membership_id HAVING count(*) > 1", {"r": reward.id},
    )  # fmt: skip
    assert per_member == []
    held = await db.fetch_one(
        "SELECT sum(held), count(*) FILTER (WHERE held > 0) FROM account"
        " WHERE program_id = %(p)s AND kind = 'member'", {"p": program.id},
    )  # fmt: skip
    assert held == (50 * 100, 50)
    assert await verify_ledger(db) == []


async def test_a_busy_slot_is_waited_for_not_taken_for_sold_out(db: Database) -> None:
    program = await make_program(db)
    reward = await make_reward(db, program, stock=1)  # one unit, in slot 0 of 16
    membership = await member_with_points(db, program, 500)
    async with db.connection() as conn, conn.transaction():
        # Another transaction holds the only slot with stock (as a concurrent reservation
        # would until its commit): the reservation must wait for it, not fail.
        await conn.execute(
            "SELECT 1 FROM reward_stock_slot WHERE reward_id = %(r)s AND stock > 0 FOR UPDATE",
            {"r": reward.id},
        )
        pending = asyncio.create_task(reserve(db, program, reward, membership))
        await asyncio.sleep(0.5)
        assert not pending.done()
    done = await pending
    assert done.redemption.stock_slot == 0
    assert await stock(db, reward) == (0, 1)
    row = await db.fetch_one(
        "SELECT count(*) FILTER (WHERE stock = 0), count(*) FROM reward_stock_slot"
        " WHERE reward_id = %(r)s",
        {"r": reward.id},
    )
    assert row == (16, 16)


async def test_reservations_spread_over_the_slots(db: Database) -> None:
    program = await make_program(db)
    reward = await make_reward(db, program, stock=None)
    members = [await member_with_points(db, program, 250) for _ in range(40)]
    await asyncio.gather(*(reserve(db, program, reward, m) for m in members))
    row = await db.fetch_one(
        "SELECT count(*) FILTER (WHERE redeemed > 0), sum(redeemed) FROM reward_stock_slot"
        " WHERE reward_id = %(r)s",
        {"r": reward.id},
    )
    assert row is not None
    used, total = row
    assert total == 40
    assert used >= 2  # random starting slots: 40 reservations never all land on one


async def test_a_slot_that_empties_while_waited_for_gives_way_to_another(db: Database) -> None:
    program = await make_program(db)
    reward = await make_reward(db, program, stock=2)  # one unit in slot 0, one in slot 1
    membership = await member_with_points(db, program, 500)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM reward_stock_slot WHERE reward_id = %(r)s AND stock > 0 FOR UPDATE",
            {"r": reward.id},
        )
        pending = asyncio.create_task(reserve(db, program, reward, membership))
        await asyncio.sleep(0.5)
        assert not pending.done()  # waiting for slot 0 or 1
        # Slot 0's unit goes elsewhere meanwhile (written off, so the books still add up).
        await conn.execute(
            "UPDATE reward_stock_slot SET stock = 0 WHERE reward_id = %(r)s AND slot = 0",
            {"r": reward.id},
        )
        await conn.execute(
            "UPDATE reward SET stock_issued = stock_issued - 1 WHERE id = %(r)s", {"r": reward.id}
        )
    done = await pending
    assert done.redemption.stock_slot == 1
    assert await stock(db, reward) == (0, 1)
