"""`points.expiring`: a member's points that expire within EXPIRING_WITHIN, told once.

The job (inside `alliance serve` on the expiry interval, and `alliance jobs run expiring`)
takes lots with points left whose expiry falls in the window and that were never told,
records each in `expiry_notice` (its primary key makes a lot told once, whatever runs
concurrently), and writes one outbox event per membership: the points and the earliest
expiry among them. Lots are only read (their rows change under their account's lock
only, which this never takes).
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta

from alliance.db.engine import Database

EXPIRING_WITHIN = timedelta(days=7)
BATCH = 1000
log = logging.getLogger("alliance.events")

_NOTIFY = """
WITH due AS (
    SELECT l.id, l.account_id, l.program_id, l.member_id, l.remaining, l.expires_at
      FROM lot l
     WHERE l.remaining > 0 AND l.expires_at > now() AND l.expires_at <= now() + %(within)s
       AND NOT EXISTS (SELECT 1 FROM expiry_notice n WHERE n.lot_id = l.id)
     ORDER BY l.expires_at, l.id
     LIMIT %(batch)s
), noticed AS (
    INSERT INTO expiry_notice (lot_id) SELECT id FROM due ORDER BY id
    ON CONFLICT DO NOTHING RETURNING lot_id
), grouped AS (
    SELECT a.membership_id, d.program_id, d.member_id, sum(d.remaining) AS points,
           min(d.expires_at) AS first_expiry, count(*) AS lots
      FROM due d JOIN noticed n ON n.lot_id = d.id JOIN account a ON a.id = d.account_id
     GROUP BY a.membership_id, d.program_id, d.member_id
), events AS (
    INSERT INTO outbox_event (topic, merchant_id, member_id, payload)
    SELECT 'points.expiring', p.merchant_id, g.member_id,
           jsonb_build_object('membership_id', g.membership_id, 'program_id', g.program_id,
                              'points', g.points, 'expires_at', g.first_expiry, 'lots', g.lots)
      FROM grouped g JOIN program p ON p.id = g.program_id
     ORDER BY g.member_id, g.membership_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM due), (SELECT count(*) FROM events)
"""


async def notify_expiring(
    db: Database, *, within: timedelta = EXPIRING_WITHIN, batch: int = BATCH
) -> int:
    """Write the events for every lot now in the window; returns how many events."""
    events = 0
    while True:
        row = await db.fetch_one(_NOTIFY, {"within": within, "batch": batch})
        assert row is not None
        events += int(row[1])
        if int(row[0]) < batch:
            return events


async def run_expiring_schedule(db: Database, *, interval_seconds: float) -> None:
    """Inside `alliance serve`: tell expiring points every `interval_seconds`."""
    await asyncio.sleep(random.uniform(0, interval_seconds))
    while True:
        try:
            if told := await notify_expiring(db):
                log.info("%s points.expiring events written", told)
        except asyncio.CancelledError:
            raise
        except Exception:  # the schedule outlives a failed run; the next one retries
            log.exception("expiring notice failed")
        await asyncio.sleep(interval_seconds)
