"""The tier review: the scheduled job that starts grace periods, moves members down when
one has passed, cancels those that no longer apply, and carries members onto a new
ladder version.

The work is a loop of batches, each one call of `tier_review` (one transaction, about
`batch_size` memberships): memory stays flat, no lock is held for long, a crash loses at
most the batch in flight, and a re-run or a concurrent run does nothing twice (see
migrations/sql/0004_tiers.sql). Memberships busy with a points movement are skipped and
retried, by id, in a few short passes; whatever is still busy waits for the next run.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from alliance.db.engine import Database

log = logging.getLogger(__name__)

BATCH_SIZE = 500
RETRIES = 5
"""Passes over the memberships that were busy in the pass before."""
_REVIEW = (
    "SELECT reviewed, moved, graced, cancelled, busy, next_membership_id"
    " FROM tier_review(%(now)s, %(after)s::bigint, %(limit)s::integer, %(only)s::bigint[])"
)


@dataclass(frozen=True, slots=True)
class TierReview:
    reviewed: int
    """Memberships settled (above the entry tier, pending a downgrade, or on an old ladder)."""
    moved: int
    """Tier changes recorded: downgrades, and moves onto a new ladder version."""
    graced: int
    """Grace periods started."""
    cancelled: int
    """Pending downgrades cancelled: the member qualifies again."""
    batches: int
    busy: int
    """Memberships still locked by other transactions after the last pass (next run)."""


async def review_tiers(
    db: Database, *, now: datetime | None = None, batch_size: int = BATCH_SIZE
) -> TierReview:
    """Review every membership's tier as of `now` (default: the current time)."""
    assert batch_size > 0
    now = now or datetime.now(UTC)
    totals = [0, 0, 0, 0]
    batches = 0
    only: list[int] | None = None
    for attempt in range(RETRIES + 1):
        busy: list[int] = []
        after = 0
        while True:
            row = await db.fetch_one(
                _REVIEW, {"now": now, "after": after, "limit": batch_size, "only": only}
            )
            assert row is not None
            *counts, skipped, next_membership_id = row
            if next_membership_id is None:
                break
            totals = [total + count for total, count in zip(totals, counts, strict=True)]
            batches += 1
            busy += skipped
            after = next_membership_id
        if not busy or attempt == RETRIES:
            break
        only = busy
        await asyncio.sleep(0.05 * (attempt + 1))
    reviewed, moved, graced, cancelled = totals
    review = TierReview(reviewed, moved, graced, cancelled, batches, len(busy))
    if review.moved or review.graced or review.cancelled or review.busy:
        log.info("reviewed tiers", extra={"reviewed": review.reviewed, "moved": review.moved,
                                           "graced": review.graced,
                                           "cancelled": review.cancelled,
                                           "batches": batches, "busy": review.busy})  # fmt: skip
    return review


async def run_tier_review_schedule(db: Database, *, interval_seconds: float) -> None:
    """Review tiers every `interval_seconds` until cancelled (inside `alliance serve`).

    Every worker process may run it: batches skip each other's memberships, and a
    membership reviewed twice changes once. The start is jittered so the workers do not
    wake together.
    """
    await asyncio.sleep(random.uniform(0, interval_seconds))
    while True:
        try:
            await review_tiers(db)
        except asyncio.CancelledError:
            raise
        except Exception:  # the schedule outlives a failed run; the next one retries
            log.exception("tier review failed")
        await asyncio.sleep(interval_seconds)
