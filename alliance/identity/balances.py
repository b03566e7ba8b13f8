"""`allianceBalances`: a member's points at every linked program, in one statement.

What the actor sees of the member's programs:
- the operator and auditors: every program, member numbers included;
- a merchant, and a member token (what the merchant's app shows, the merchant sees):
  its own programs in full; another merchant's program only while the member consents
  to `partner_balances` for this merchant (its tier only with `share_tier`), and never
  that merchant's member number or membership id.

Consents are read in the same statement as the balances, from the table, so a
withdrawal holds from the very next request. One statement whatever the number of
programs (tests count them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import InvalidInput

DEFAULT_EXPIRING_DAYS = 30
MAX_EXPIRING_DAYS = 3660


@dataclass(frozen=True, slots=True)
class BalanceLine:
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
    tier_code: str | None
    tier_name: str | None

    @property
    def value(self) -> Decimal:
        """What the points are worth in the settlement currency (the merchant's liability)."""
        return self.points * self.point_value


@dataclass(frozen=True, slots=True)
class AllianceBalances:
    member_id: int
    lines: list[BalanceLine]
    expiring_within_days: int

    @property
    def total_value(self) -> Decimal:
        return sum((line.value for line in self.lines), Decimal(0))

    @property
    def expiring_points(self) -> int:
        return sum(line.expiring_points for line in self.lines)


def _sql(tiers: bool) -> str:
    """The statement; with `tiers`, each line's tier too (two more lookups per line)."""
    tier_columns = "t.code, t.name" if tiers else "NULL::text, NULL::text"
    tier_joins = (
        "LEFT JOIN membership_tier mt ON mt.membership_id = ms.id"
        " LEFT JOIN tier t ON t.id = mt.tier_id"
        if tiers
        else ""
    )
    return f"""
WITH target AS (
    SELECT m.member_id
      FROM membership m JOIN program p ON p.id = m.program_id
     WHERE m.id = %(membership)s
       AND (%(wide)s OR p.merchant_id = %(merchant)s)
       AND (%(member)s::bigint IS NULL OR m.member_id = %(member)s::bigint)
), grants AS MATERIALIZED (  -- once, not once per line
    SELECT coalesce(bool_or(c.purpose = 'partner_balances'), false) AS balances,
           coalesce(bool_or(c.purpose = 'share_tier'), false) AS tiers
      FROM consent c JOIN target ON c.member_id = target.member_id
     WHERE c.merchant_id = %(merchant)s AND c.withdrawn_at IS NULL
)
SELECT target.member_id, line.*
  FROM target
  LEFT JOIN LATERAL (
    SELECT ms.program_id, p.merchant_id, p.name, p.unit_name, p.point_value,
           (%(wide)s OR p.merchant_id = %(merchant)s) AS own,
           ms.id AS membership_id, ms.member_number, a.balance, a.held,
           coalesce(ex.points, 0) AS expiring, ex.next_expiry, {tier_columns}, g.tiers
      FROM membership ms
      JOIN program p ON p.id = ms.program_id
      JOIN account a ON a.membership_id = ms.id
      CROSS JOIN grants g
      LEFT JOIN LATERAL (
        SELECT sum(l.remaining) AS points, min(l.expires_at) AS next_expiry
          FROM lot l
         WHERE l.account_id = a.id AND l.remaining > 0
           AND l.expires_at <= now() + make_interval(days => %(days)s)
      ) ex ON true
      {tier_joins}
     WHERE ms.member_id = target.member_id AND ms.status = 'active'
       AND (%(wide)s OR p.merchant_id = %(merchant)s OR g.balances)
  ) line ON true
 ORDER BY line.membership_id
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
    wide = actor.role in (Role.OPERATOR, Role.AUDITOR)
    rows = await db.fetch_all(
        _SQL[tiers],
        {
            "membership": membership_id,
            "wide": wide,
            "merchant": actor.merchant_id,
            "member": actor.member_id if actor.role is Role.MEMBER else None,
            "days": expiring_within_days,
        },
    )
    if not rows:
        return None
    lines = []
    for row in rows:
        if row[1] is None:
            continue  # the member has no active membership the actor may see
        (_, program_id, merchant_id, name, unit_name, point_value, own,
         line_membership_id, number, balance, held, expiring, next_expiry, tier_code,
         tier_name, tiers_shared) = row  # fmt: skip
        show_tier = own or tiers_shared
        lines.append(
            BalanceLine(
                program_id,
                merchant_id,
                name,
                unit_name,
                point_value,
                own,
                line_membership_id if own else None,
                number if own else None,
                balance,
                held,
                int(expiring),
                next_expiry,
                tier_code if show_tier else None,
                tier_name if show_tier else None,
            )
        )
    return AllianceBalances(int(rows[0][0]), lines, expiring_within_days)
