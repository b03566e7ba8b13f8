"""`alliance jobs run rewards`, and the server's schedule, release lapsed redemptions."""

from __future__ import annotations

import asyncio
import contextlib

from alliance.db.engine import Database
from alliance.ledger.expiry import run_expiry_schedule
from tests.rewards.helpers import account, reserve, setup, stock
from tests.test_cli import _alliance


async def _lapsed(db: Database) -> None:
    await db.fetch_one("UPDATE redemption SET expires_at = now() - interval '1 minute'"
                       " RETURNING id")  # fmt: skip


async def test_jobs_run_rewards(db: Database) -> None:
    program, reward, membership = await setup(db)
    await reserve(db, program, reward, membership)
    await _lapsed(db)
    result = await _alliance(db, "jobs", "run", "rewards", "--batch-size", "10")
    assert result.returncode == 0, result.stderr
    assert "released 1 expired redemptions" in result.stdout
    assert await account(db, membership) == (1000, 0)
    assert await stock(db, reward) == (10, 0)


async def test_the_servers_schedule_releases_them(db: Database) -> None:
    program, reward, membership = await setup(db)
    await reserve(db, program, reward, membership)
    await _lapsed(db)
    schedule = asyncio.create_task(run_expiry_schedule(db, interval_seconds=0.05))
    try:
        for _ in range(100):
            if await account(db, membership) == (1000, 0):
                break
            await asyncio.sleep(0.05)
    finally:
        schedule.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await schedule
    assert await stock(db, reward) == (10, 0)
