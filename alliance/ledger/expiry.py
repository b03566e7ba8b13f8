"""Expiring points (积分清零): the job that posts each due lot's remainder to `expired`.

The work is a loop of batches, each one call of `ledger_expire` (one transaction,
about `batch_size` lots): memory stays flat whatever is due, no lock is held for
long, a crash loses at most the batch in flight (which rolls back), and a re-run
or a concurrent run expires each lot once (see migrations/sql/0001_ledger.sql).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from alliance.db.engine import Database
from alliance.ledger.holds import release_expired_holds
from alliance.rewards.redemptions import release_expired_redemptions

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
PASSES = 20
"""Passes over the due lots while some accounts were busy (locked by a movement)."""
_EXPIRE = (
    "SELECT lots, points, busy, next_expires_at, next_lot_id"
    " FROM ledger_expire(%(now)s, %(after_expires_at)s, %(after_lot_id)s, %(limit)s)"
)
_START = (datetime.min.replace(tzinfo=UTC), 0)


@dataclass(frozen=True, slots=True)
class ExpiryRun:
    lots: int
    points: int
    batches: int
    busy: int
    """Accounts still locked by other transactions after the last pass (expire next run)."""


async def expire_points(
    db: Database, *, now: datetime | None = None, batch_size: int = BATCH_SIZE
) -> ExpiryRun:
    """Expire every lot due at `now` (default: the current time).

    A pass walks the due lots once, in (expires_at, id) order; lots of accounts busy
    at that moment are left for another pass, a moment later.
    """
    assert batch_size > 0
    now = now or datetime.now(UTC)
    lots = points = batches = busy = 0
    for attempt in range(PASSES):
        busy = 0
        after_expires_at, after_lot_id = _START
        while True:
            row = await db.fetch_one(
                _EXPIRE,
                {"now": now, "after_expires_at": after_expires_at,
                 "after_lot_id": after_lot_id, "limit": batch_size},
            )  # fmt: skip
            assert row is not None
            expired_lots, expired_points, busy_accounts, next_expires_at, next_lot_id = row
            if next_lot_id is None:
                break
            lots, points, batches = lots + expired_lots, points + expired_points, batches + 1
            busy += busy_accounts
            after_expires_at, after_lot_id = next_expires_at, next_lot_id
        if not busy:
            break
        await asyncio.sleep(0.05 * (attempt + 1))
    if lots or busy:
        log.info("expired points", extra={"lots": lots, "points": points, "batches": batches,
                                           "busy_accounts": busy})  # fmt: skip
    return ExpiryRun(lots, points, batches, busy)


async def run_expiry_schedule(db: Database, *, interval_seconds: float) -> None:
    """Release expired holds and redemptions, then expire due points, every
    `interval_seconds` until cancelled (inside `alliance serve`).

    Every worker process may run it: batches skip each other's accounts, so running
    twice costs a little work and never expires a lot twice. The start is jittered so
    the workers do not wake together.
    """
    await asyncio.sleep(random.uniform(0, interval_seconds))
    while True:
        try:
            await release_expired_holds(db)
            await release_expired_redemptions(db)
            await expire_points(db)
        except asyncio.CancelledError:
            raise
        except Exception:  # the schedule outlives a failed run; the next one retries
            log.exception("expiry run failed")
        await asyncio.sleep(interval_seconds)
