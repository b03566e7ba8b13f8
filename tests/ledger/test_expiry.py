"""Point validity: when lots expire, and the job that expires them."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from alliance.db.engine import Database
from alliance.errors import InsufficientPoints, InvalidInput
from alliance.ledger.expiry import expire_points
from alliance.ledger.models import LedgerTransaction, Lot
from alliance.ledger.service import spend_points
from alliance.members.queries import MembershipRecord, memberships_by_id
from alliance.programs.models import ExpiryPolicy
from tests.factories import OPERATOR, give_points, make_membership, make_program, merchant_actor

SHANGHAI = "Asia/Shanghai"


@pytest.mark.parametrize(
    ("policy", "value", "earned_at", "expires_at"),
    [
        ("never", 0, "2026-03-05T02:00:00Z", None),
        # Valid through the end of the 30th day after the earn day, Shanghai time.
        ("days_after_earn", 30, "2026-03-05T02:00:00Z", "2026-04-04T16:00:00Z"),
        # 00:30 on 1 April in Shanghai is still 31 March in UTC: the day is Shanghai's.
        ("days_after_earn", 0, "2026-03-31T16:30:00Z", "2026-04-01T16:00:00Z"),
        ("end_of_nth_month", 0, "2026-03-05T02:00:00Z", "2026-03-31T16:00:00Z"),
        ("end_of_nth_month", 12, "2026-03-05T02:00:00Z", "2027-03-31T16:00:00Z"),
        # 积分清零 on 31 December: earned in 2026, cleared at the end of 31 Dec 2027.
        ("annual_clearing", 1231, "2026-03-05T02:00:00Z", "2027-12-31T16:00:00Z"),
        # New Year's morning in Shanghai is New Year's Eve in UTC: Shanghai's year counts.
        ("annual_clearing", 1231, "2026-12-31T16:30:00Z", "2028-12-31T16:00:00Z"),
        ("annual_clearing", 630, "2026-08-01T00:00:00Z", "2027-06-30T16:00:00Z"),
    ],
)
async def test_lot_expiry_by_policy(
    db: Database, policy: str, value: int, earned_at: str, expires_at: str | None
) -> None:
    row = await db.fetch_one(
        "SELECT lot_expiry(%(policy)s, %(value)s, %(earned)s::timestamptz, %(tz)s)",
        {"policy": policy, "value": value, "earned": earned_at, "tz": SHANGHAI},
    )
    assert row is not None
    expected = None if expires_at is None else datetime.fromisoformat(expires_at)
    assert row[0] == expected


@pytest.mark.parametrize("value", [0, 229, 1301, 1232, 431, 99999])
async def test_invalid_clearing_day_is_refused(db: Database, value: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        await make_program(db, expiry_policy=ExpiryPolicy.ANNUAL_CLEARING, expiry_value=value)
    assert refused.value.field == ("expiryValue",)


async def _age(db: Database, amount: int, *, by: timedelta) -> None:
    """Make the lot of `amount` points due `by` ago."""
    async with db.autocommit() as conn:
        await conn.execute(
            update(Lot).where(Lot.amount == amount).values(expires_at=datetime.now(UTC) - by)
        )


async def _balance(db: Database, membership_id: int) -> int:
    return (await memberships_by_id(db, OPERATOR, [membership_id]))[membership_id].balance


class TestExpiryJob:
    async def test_expires_due_lots_only(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        for points in (10, 20, 30):
            await give_points(db, membership, program, points)
        await _age(db, 10, by=timedelta(days=1))
        await _age(db, 30, by=timedelta(seconds=1))
        run = await expire_points(db)
        assert (run.lots, run.points) == (2, 40)
        assert await _balance(db, membership.id) == 20
        async with db.autocommit() as conn:
            kinds = (await conn.execute(select(LedgerTransaction.kind))).scalars().all()
        assert sorted(kinds) == ["award", "award", "award", "expire", "expire"]

    async def test_second_run_expires_nothing(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 15)
        await _age(db, 15, by=timedelta(hours=1))
        assert (await expire_points(db)).lots == 1
        assert (await expire_points(db)).lots == 0
        assert await _balance(db, membership.id) == 0

    async def test_partly_spent_lot_expires_its_remainder(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 50)
        await spend_points(db, merchant_actor(program.merchant_id), membership_id=membership.id,
                           points=35, reason="r", idempotency_key="s")  # fmt: skip
        await _age(db, 50, by=timedelta(minutes=1))
        run = await expire_points(db)
        assert (run.lots, run.points) == (1, 15)
        assert await _balance(db, membership.id) == 0

    async def test_many_lots_in_small_batches(self, db: Database) -> None:
        program = await make_program(db)
        memberships = [await make_membership(db, program) for _ in range(5)]
        for membership in memberships:
            for points in range(1, 6):
                await give_points(db, membership, program, points)
        async with db.autocommit() as conn:
            await conn.execute(update(Lot).values(expires_at=datetime.now(UTC) - timedelta(days=1)))
        run = await expire_points(db, batch_size=4)
        assert (run.lots, run.points) == (25, 75)
        assert run.batches >= 5
        for membership in memberships:
            assert await _balance(db, membership.id) == 0

    async def test_held_points_do_not_expire(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 40)
        await give_points(db, membership, program, 60)
        async with db.autocommit() as conn:
            await conn.execute(text("UPDATE account SET held = 50 WHERE membership_id = :m"),
                               {"m": membership.id})  # fmt: skip
        await _age(db, 40, by=timedelta(days=1))
        await _age(db, 60, by=timedelta(days=1))
        run = await expire_points(db)
        # The first lot can go (100 - 40 >= 50); the second would leave 0 < 50 held.
        assert (run.lots, run.points) == (1, 40)
        async with db.autocommit() as conn:
            await conn.execute(text("UPDATE account SET held = 0 WHERE membership_id = :m"),
                               {"m": membership.id})  # fmt: skip
        assert (await expire_points(db)).points == 60

    async def test_concurrent_runs_expire_each_lot_once(self, db: Database) -> None:
        program = await make_program(db)
        memberships = [await make_membership(db, program) for _ in range(6)]
        for membership in memberships:
            for points in (3, 4, 5):
                await give_points(db, membership, program, points)
        async with db.autocommit() as conn:
            await conn.execute(update(Lot).values(expires_at=datetime.now(UTC) - timedelta(days=1)))
        runs = await asyncio.gather(*(expire_points(db, batch_size=2) for _ in range(4)))
        assert sum(run.lots for run in runs) == 18
        assert sum(run.points for run in runs) == 72
        async with db.autocommit() as conn:
            expiries = await conn.scalar(
                select(func.count()).where(LedgerTransaction.kind == "expire")
            )
        assert expiries == 18

    async def test_expiry_racing_spends_keeps_the_ledger_whole(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        for points in range(1, 21):
            await give_points(db, membership, program, points)
        async with db.autocommit() as conn:
            await conn.execute(
                update(Lot).where(Lot.amount % 2 == 0)
                .values(expires_at=datetime.now(UTC) - timedelta(days=1))
            )  # fmt: skip
        actor = merchant_actor(program.merchant_id)

        async def spend(n: int) -> None:
            with contextlib.suppress(InsufficientPoints):  # refusals are part of the race
                await spend_points(db, actor, membership_id=membership.id, points=3,
                                   reason="race", idempotency_key=f"r{n}")  # fmt: skip

        await asyncio.gather(expire_points(db, batch_size=3), *(spend(n) for n in range(20)))
        # The verify in the fixture's teardown proves the ledger is whole; the expired
        # lots must be gone whatever the spends did.
        async with db.autocommit() as conn:
            due = await conn.scalar(
                select(func.count()).where(Lot.remaining > 0, Lot.expires_at <= func.now())
            )
        assert due == 0


async def test_a_job_killed_mid_run_and_run_again_expires_each_lot_once(db: Database) -> None:
    """kill -9 of `alliance jobs run expire` between batches: what it committed stays, the
    rest waits, and the next run finishes without expiring anything twice."""
    import os
    import signal
    import subprocess
    import sys

    program = await make_program(db)
    memberships = [await make_membership(db, program) for _ in range(40)]

    async def fill(membership: MembershipRecord) -> None:
        for points in range(1, 31):
            await give_points(db, membership, program, points)

    await asyncio.gather(*(fill(m) for m in memberships))
    lots = 40 * 30
    async with db.autocommit() as conn:
        await conn.execute(update(Lot).values(expires_at=datetime.now(UTC) - timedelta(days=1)))

    async def expired() -> int:
        async with db.autocommit() as conn:
            found = await conn.scalar(
                select(func.count()).where(LedgerTransaction.kind == "expire")
            )
        return int(found or 0)

    job = subprocess.Popen(  # noqa: ASYNC220 - a child killed below, on purpose
        [sys.executable, "-m", "alliance", "jobs", "run", "expire", "--batch-size", "1"],
        env=os.environ | {"ALLIANCE_DATABASE_URL": db.url,
                          "ALLIANCE_SECRET_KEY": db.settings.secret_key or "",
                          "ALLIANCE_DATA_DIR": str(db.settings.data_dir),
                          "PGAPPNAME": "expire-job-to-kill"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    async def job_sessions() -> int:
        async with db.autocommit() as conn:
            found = await conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'expire-job-to-kill'"))  # fmt: skip
        return int(found or 0)

    try:
        for _ in range(3000):
            if await expired() >= 20:
                break
            await asyncio.sleep(0.01)
        assert await job_sessions() > 0, "the job's sessions carry its name"
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(timeout=30)
    # A backend whose client died mid-COMMIT still commits, and only then notices: count
    # what the job committed once its sessions are gone.
    for _ in range(3000):
        if not await job_sessions():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the killed job's sessions did not end")
    before = await expired()
    assert 20 <= before < lots, "the job was killed in the middle of its run"

    run = await expire_points(db)
    assert run.lots == lots - before
    assert await expired() == lots
    async with db.autocommit() as conn:
        twice = await conn.scalar(text(
            "SELECT count(*) FROM (SELECT c.lot_id FROM lot_consumption c"
            " JOIN ledger_transaction t ON t.id = c.transaction_id AND t.kind = 'expire'"
            " GROUP BY c.lot_id HAVING count(*) > 1) twice"))  # fmt: skip
    assert twice == 0
    for membership in memberships:
        assert await _balance(db, membership.id) == 0
