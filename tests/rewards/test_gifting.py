"""Point gifts between members of a program: policy, limits, lots, idempotency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.errors import (
    Forbidden,
    IdempotencyKeyReused,
    InsufficientPoints,
    InvalidInput,
    LimitReached,
    NotAvailable,
    NotFound,
)
from alliance.ledger.holds import authorize_hold
from alliance.programs.models import ExpiryPolicy
from alliance.programs.queries import ProgramRecord
from alliance.rewards.gifting import GiftResult, give_points, set_gift_policy
from tests.factories import OPERATOR, make_program, member_actor, merchant_actor
from tests.rewards.helpers import account, member_with_points


async def _program(db: Database, **policy: int) -> tuple[ProgramRecord, Actor]:
    program = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=30)
    limits = {"max_points_per_gift": 100, "daily_limit_points": 150} | policy
    await set_gift_policy(db, merchant_actor(program.merchant_id), program_id=program.id,
                          enabled=True, **limits)  # fmt: skip
    return program, merchant_actor(program.merchant_id)


async def test_a_gift_moves_points_and_lots(db: Database) -> None:
    program, _ = await _program(db)
    sender = await member_with_points(db, program, 300)
    recipient = await member_with_points(db, program, 0)
    actor = member_actor(sender, program.merchant_id)
    gift = await give_points(db, actor, from_membership_id=sender.id,
                             to_member_number=recipient.member_number, points=80,
                             message="生日快乐", idempotency_key="g1")  # fmt: skip
    assert (gift.balance_after, gift.replayed) == (220, False)
    assert await account(db, sender) == (220, 0)
    assert await account(db, recipient) == (80, 0)
    lots = await db.fetch_all(
        "SELECT l.account_id = a.id, l.remaining, l.expires_at FROM lot l JOIN account a"
        " ON a.membership_id = %(m)s ORDER BY l.id", {"m": recipient.id},
    )  # fmt: skip
    sender_lot = await db.fetch_one(
        "SELECT l.expires_at FROM lot l JOIN account a ON a.id = l.account_id"
        " WHERE a.membership_id = %(m)s", {"m": sender.id},
    )  # fmt: skip
    mine = [lot for lot in lots if lot[0]]
    assert len(mine) == 1
    assert mine[0][1] == 80
    assert sender_lot is not None
    assert mine[0][2] == sender_lot[0]  # a gift never extends validity
    again = await give_points(db, actor, from_membership_id=sender.id,
                              to_member_number=recipient.member_number, points=80,
                              message="生日快乐", idempotency_key="g1")  # fmt: skip
    assert (again.replayed, again.transaction_id) == (True, gift.transaction_id)
    with pytest.raises(IdempotencyKeyReused):
        await give_points(db, actor, from_membership_id=sender.id,
                          to_membership_id=recipient.id, points=81, message="生日快乐",
                          idempotency_key="g1")  # fmt: skip
    kind = await db.fetch_one("SELECT kind FROM ledger_transaction WHERE id = %(t)s",
                              {"t": gift.transaction_id})  # fmt: skip
    assert kind == ("gift",)


async def test_policy_and_limits(db: Database) -> None:
    program, merchant = await _program(db)
    sender = await member_with_points(db, program, 1000)
    recipient = await member_with_points(db, program, 0)
    args: dict[str, Any] = {"from_membership_id": sender.id, "to_membership_id": recipient.id}
    with pytest.raises(InvalidInput):  # more than one gift may carry
        await give_points(db, merchant, **args, points=101, idempotency_key="a")
    await give_points(db, merchant, **args, points=100, idempotency_key="b")
    with pytest.raises(LimitReached):  # 150 a day
        await give_points(db, merchant, **args, points=51, idempotency_key="c")
    await give_points(db, merchant, **args, points=50, idempotency_key="d")
    async with db.connection() as conn:  # gifts are facts: backdated past the guard
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE gift SET created_at = created_at - interval '1 day'")
        await conn.execute("SET session_replication_role = DEFAULT")
    await give_points(db, merchant, **args, points=100, idempotency_key="d2")
    with pytest.raises(InvalidInput):  # not to oneself
        await give_points(
            db,
            merchant,
            from_membership_id=sender.id,
            to_membership_id=sender.id,
            points=1,
            idempotency_key="e",
        )
    elsewhere = await member_with_points(db, await make_program(db), 0)
    with pytest.raises(NotFound):  # only within the program
        await give_points(
            db,
            merchant,
            from_membership_id=sender.id,
            to_membership_id=elsewhere.id,
            points=1,
            idempotency_key="f",
        )
    await set_gift_policy(
        db,
        merchant,
        program_id=program.id,
        enabled=False,
        max_points_per_gift=1,
        daily_limit_points=1,
    )
    with pytest.raises(NotAvailable):
        await give_points(db, merchant, **args, points=1, idempotency_key="g")
    with pytest.raises(Forbidden):
        await give_points(db, OPERATOR, **args, points=1, idempotency_key="h")


async def test_held_points_are_not_given(db: Database) -> None:
    program, merchant = await _program(db)
    sender = await member_with_points(db, program, 100)
    recipient = await member_with_points(db, program, 0)
    await authorize_hold(
        db,
        merchant,
        membership_id=sender.id,
        points=60,
        kind="discount",
        reason="bill",
        idempotency_key="h",
    )
    with pytest.raises(InsufficientPoints):
        await give_points(
            db,
            merchant,
            from_membership_id=sender.id,
            to_membership_id=recipient.id,
            points=41,
            idempotency_key="x",
        )
    await give_points(
        db,
        merchant,
        from_membership_id=sender.id,
        to_membership_id=recipient.id,
        points=40,
        idempotency_key="y",
    )
    assert await account(db, sender) == (60, 60)


async def test_the_daily_limit_holds_under_concurrent_gifts(db: Database) -> None:
    program, merchant = await _program(db, max_points_per_gift=10, daily_limit_points=50)
    sender = await member_with_points(db, program, 1000)
    friends = [await member_with_points(db, program, 0) for _ in range(4)]
    outcomes = await asyncio.gather(
        *(give_points(db, merchant, from_membership_id=sender.id,
                      to_membership_id=friends[n % 4].id, points=10,
                      idempotency_key=f"c{n}") for n in range(20)),
        return_exceptions=True,
    )  # fmt: skip
    assert sum(isinstance(o, GiftResult) for o in outcomes) == 5
    assert all(isinstance(o, GiftResult | LimitReached) for o in outcomes)
    assert await account(db, sender) == (950, 0)


async def test_gifts_both_ways_at_once_do_not_deadlock(db: Database) -> None:
    program, merchant = await _program(db, max_points_per_gift=10, daily_limit_points=1000)
    a = await member_with_points(db, program, 500)
    b = await member_with_points(db, program, 500)
    await asyncio.gather(*(
        give_points(db, merchant, from_membership_id=x.id, to_membership_id=y.id,
                    points=1, idempotency_key=f"w{n}")
        for n, (x, y) in enumerate([(a, b), (b, a)] * 20)
    ))  # fmt: skip
    assert await account(db, a) == (500, 0)
    assert await account(db, b) == (500, 0)


async def test_a_gift_repays_the_recipients_clawback_debt_first(db: Database) -> None:
    program, merchant = await _program(db)
    sender = await member_with_points(db, program, 100)
    recipient = await member_with_points(db, program, 0)
    # A clawback debt of 30, as a refund of spent points would leave it.
    await db.fetch_one(
        "WITH tx AS (INSERT INTO ledger_transaction (kind, member_id, reason)"
        " VALUES ('reverse', %(member)s, 'test debt') RETURNING id)"
        " INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount)"
        " SELECT tx.id, a.id, a.program_id, %(member)s, v.amount FROM tx,"
        " (VALUES ('issued', 30), ('clawback', -30)) v (kind, amount)"
        " JOIN account a ON a.program_id = %(program)s AND a.kind = v.kind"
        " AND a.membership_id IS NULL RETURNING id",
        {"member": recipient.member_id, "program": program.id},
    )
    await db.fetch_one("UPDATE account SET debt = 30 WHERE membership_id = %(m)s RETURNING id",
                       {"m": recipient.id})  # fmt: skip
    gift = await give_points(
        db,
        merchant,
        from_membership_id=sender.id,
        to_membership_id=recipient.id,
        points=50,
        idempotency_key="debt",
    )
    assert gift.balance_after == 50
    assert await account(db, recipient) == (20, 0)
