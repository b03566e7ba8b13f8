"""`allianceBalances`: a member's points at every linked program, in one statement.

What the actor sees of the member's programs:
- the operator and auditors: every program, member numbers included;
- a merchant, and a member token (what the merchant's app shows, the merchant sees):
  its own programs in full; another merchant's program only while the member consents
  to `partner_balances` for this merchant (its tier only with `share_tier`), and never
  that merchant's member number or membership id.

Consents are read in the same statement as the balances, from the table, so a
withdrawal holds from the very next request; the statement itself leaves out what the
actor may not see (lines, member numbers, membership ids, tiers), so each row is a line
as shown. One statement whatever the number of programs (tests count them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.paging import Page
from alliance.errors import InvalidInput

DEFAULT_EXPIRING_DAYS = 30
MAX_EXPIRING_DAYS = 3660


class BalanceLine(NamedTuple):
    """One program of the member, as the actor may see it (a row of the statement)."""

    program_id: int
    merchant_id: int
    program_name: str
    unit_name: str
    point_value: Decimal
    own: bool
    """A program of the actor's merchant (or an alliance-wide actor): shown in full."""
    membership_id: int | None
    member_number: str | None
    points: int
    held: int
    expiring_points: int
    next_expiry: datetime | None
    tier_code: str | None = None
    tier_name: str | None = None

    @property
    def value(self) -> Decimal:
        """What the points are worth in the settlement currency (the merchant's liability)."""
        return self.points * self.point_value


@dataclass(frozen=True, slots=True)
class AllianceBalances:
    member_id: int
    lines: list[BalanceLine]
    """In the order the member's memberships were made; at most one per program."""
    expiring_within_days: int

    @property
    def total_value(self) -> Decimal:
        return sum((line.value for line in self.lines), Decimal(0))

    @property
    def expiring_points(self) -> int:
        return sum(line.expiring_points for line in self.lines)

    def page(self, first: int, after: int | None) -> Page[BalanceLine]:
        """The lines after the line of program `after` (a cursor), at most `first` of them.

        A cursor names a program, not a position: the other merchants' membership ids, by
        which the lines are ordered, are not the actor's to see. A cursor whose program is
        no longer shown (its consent withdrawn, its membership unlinked) is refused rather
        than read as a position, so that a client never skips lines unknowingly.
        """
        start = 0
        if after is not None:
            start = next((n for n, line in enumerate(self.lines) if line.program_id == after), -1)
            if start < 0:
                raise InvalidInput(
                    "after: that program's line is no longer shown; read the lines again "
                    "from the start",
                    field=("after",),
                )
            start += 1
        rest = self.lines[start:]
        return Page(rest[:first], len(rest) > first)


def _sql(tiers: bool) -> str:
    """The statement; with `tiers`, each line's tier too (two more lookups per line)."""
    own = "(%(wide)s::boolean OR p.merchant_id = %(merchant)s::bigint)"
    tier_consent = (
        """,
           EXISTS (SELECT FROM consent c
                    WHERE c.member_id = m.member_id AND c.merchant_id = %(merchant)s::bigint
                      AND c.purpose = 'share_tier' AND c.withdrawn_at IS NULL) AS tiers"""
        if tiers
        else ""
    )
    tier_columns = (
        f""",
           CASE WHEN {own} OR target.tiers THEN t.code END,
           CASE WHEN {own} OR target.tiers THEN t.name END"""
        if tiers
        else ""
    )
    tier_joins = (
        """
      LEFT JOIN membership_tier mt ON mt.membership_id = ms.id
      LEFT JOIN tier t ON t.id = mt.tier_id"""
        if tiers
        else ""
    )
    # `target` is read once (MATERIALIZED), consents included: not once per line. Each line
    # costs a program, an account and the open lots expiring in the window, by index. The
    # lines are ordered by membership id (`ord`, not shown: foreign ids are hidden).
    return f"""
WITH target AS MATERIALIZED (
    SELECT m.member_id,
           EXISTS (SELECT FROM consent c
                    WHERE c.member_id = m.member_id AND c.merchant_id = %(merchant)s::bigint
                      AND c.purpose = 'partner_balances' AND c.withdrawn_at IS NULL)
             AS balances{tier_consent}
      FROM membership m JOIN program p ON p.id = m.program_id
     WHERE m.id = %(membership)s::bigint
       AND {own}
       AND (%(member)s::bigint IS NULL OR m.member_id = %(member)s::bigint)
)
SELECT target.member_id, line.*
  FROM target
  LEFT JOIN LATERAL (
    SELECT ms.id AS ord, ms.program_id, p.merchant_id, p.name, p.unit_name, p.point_value,
           {own},
           CASE WHEN {own} THEN ms.id END,
           CASE WHEN {own} THEN ms.member_number END,
           a.balance, a.held, coalesce(ex.points, 0), ex.next_expiry{tier_columns}
      FROM membership ms
      JOIN program p ON p.id = ms.program_id
      JOIN account a ON a.membership_id = ms.id
      LEFT JOIN LATERAL (
        SELECT sum(l.remaining)::bigint AS points, min(l.expires_at) AS next_expiry
          FROM lot l
         WHERE l.account_id = a.id AND l.remaining > 0
           AND l.expires_at <= now() + make_interval(days => %(days)s::int)
      ) ex ON true{tier_joins}
     WHERE ms.member_id = target.member_id AND ms.status = 'active'
       AND ({own} OR target.balances)
  ) line ON true
 ORDER BY line.ord
"""


_SQL = {tiers: _sql(tiers) for tiers in (False, True)}


async def alliance_balances(
    db: Database,
    actor: Actor,
    *,
    membership_id: int | None = None,
    expiring_within_days: int = DEFAULT_EXPIRING_DAYS,
    tiers: bool = True,
) -> AllianceBalances | None:
    """Balances of the member behind `membership_id` (a member token: their own by
    default); None when the membership is not the actor's to see. Without `tiers` the
    lines carry no tier (the caller did not ask for it: a cheaper statement)."""
    actor.require(Role.OPERATOR, Role.AUDITOR, Role.MERCHANT, Role.MEMBER)
    if not 0 <= expiring_within_days <= MAX_EXPIRING_DAYS:
        raise InvalidInput(
            f"expiringWithinDays must be 0 to {MAX_EXPIRING_DAYS}", field=("expiringWithinDays",)
        )
    if membership_id is None:
        if actor.membership_id is None:
            raise InvalidInput("membershipId is required", field=("membershipId",))
        membership_id = actor.membership_id
    rows = await db.read(
        _SQL[tiers],
        {
            "membership": membership_id,
            "wide": actor.role in (Role.OPERATOR, Role.AUDITOR),
            "merchant": actor.merchant_id,
            "member": actor.member_id if actor.role is Role.MEMBER else None,
            "days": expiring_within_days,
        },
    )
    if not rows:
        return None
    # A row without `ord`: the member has no active membership the actor may see.
    lines = [BalanceLine(*row[2:]) for row in rows if row[1] is not None]
    return AllianceBalances(rows[0][0], lines, expiring_within_days)
