"""Reminders: members whose points expire soon, with rewards they can afford now, for
notifications (the events issue sends them; this only lists them).

One statement per page: the memberships of a program with points expiring within the
window (keyset on membership id), each with its spendable points and up to
`REWARDS_PER_MEMBER` available rewards it can pay for, dearest first (what the expiring
points would best be spent on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.paging import MAX_PAGE_SIZE, Page
from alliance.errors import InvalidInput, NotFound
from alliance.validation import check_range

REWARDS_PER_MEMBER = 5


@dataclass(frozen=True, slots=True)
class ExpiryReminder:
    membership_id: int
    member_id: int
    points_expiring: int
    first_expires_at: datetime
    spendable: int
    affordable_reward_ids: list[int]


_REMINDERS = """
    WITH expiring AS (
        SELECT l.account_id, sum(l.remaining) AS points, min(l.expires_at) AS first_expiry
          FROM lot l
         WHERE l.program_id = %(program)s AND l.remaining > 0
           AND l.expires_at > now() AND l.expires_at <= now() + make_interval(days => %(days)s)
         GROUP BY l.account_id
    ), members AS (
        SELECT a.membership_id, a.member_id, e.points, e.first_expiry,
               greatest(0, (SELECT coalesce(sum(s.remaining), 0) FROM lot s
                             WHERE s.account_id = a.id AND s.remaining > 0
                               AND s.available_at <= now()
                               AND (s.expires_at IS NULL OR s.expires_at > now()))
                           - a.held) AS spendable
          FROM expiring e JOIN account a ON a.id = e.account_id
         WHERE (%(after)s::bigint IS NULL OR a.membership_id > %(after)s::bigint)
         ORDER BY a.membership_id
         LIMIT %(limit)s
    )
    SELECT m.membership_id, m.member_id, m.points, m.first_expiry, m.spendable,
           coalesce((SELECT array_agg(x.id ORDER BY x.points_price DESC, x.id)
                       FROM (SELECT r.id, v.points_price
                               FROM reward r JOIN reward_version v
                                 ON v.reward_id = r.id AND v.version = r.version
                              WHERE r.program_id = %(program)s AND r.status = 'active'
                                AND EXISTS (SELECT 1 FROM reward_stock_slot s
                                             WHERE s.reward_id = r.id
                                               AND (s.stock IS NULL OR s.stock > 0))
                                AND v.valid_from <= now()
                                AND (v.valid_until IS NULL OR v.valid_until > now())
                                AND v.points_price <= m.spendable
                              ORDER BY v.points_price DESC, r.id
                              LIMIT %(rewards)s) x), '{}')
      FROM members m
     ORDER BY m.membership_id"""


async def expiry_reminders(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    within_days: int,
    first: int,
    after: int | None,
) -> Page[ExpiryReminder]:
    """For the program's merchant and the operator (who runs notifications)."""
    actor.require(Role.OPERATOR, Role.MERCHANT)
    check_range(within_days, "withinDays", minimum=1, maximum=365)
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field=("first",))
    if actor.role is Role.MERCHANT:
        owner = await db.fetch_one("SELECT merchant_id FROM program WHERE id = %(p)s",
                                   {"p": program_id})  # fmt: skip
        if owner is None or owner[0] != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
    rows = await db.fetch_all(
        _REMINDERS,
        {"program": program_id, "days": within_days, "after": after, "limit": first + 1,
         "rewards": REWARDS_PER_MEMBER},
    )  # fmt: skip
    return Page.from_rows(rows, first, _reminder)


def _reminder(row: Any) -> ExpiryReminder:
    membership_id, member_id, points, first_expiry, spendable, reward_ids = row
    return ExpiryReminder(membership_id, member_id, int(points), first_expiry, int(spendable),
                          list(reward_ids))  # fmt: skip
