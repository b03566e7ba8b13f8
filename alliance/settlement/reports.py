"""Finance reports per program: liability at a date, movements and breakage in a window.

Member balances are the negation of the system accounts' (every transaction balances),
so each figure is a sum of postings by account kind; a merchant-bound caller sees its
own programs, the alliance-wide roles all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Liability:
    program_id: int
    outstanding_points: int
    point_value: Decimal
    liability: Decimal
    """outstanding_points × point_value, in the settlement currency."""


@dataclass(frozen=True, slots=True)
class Movements:
    program_id: int
    issued: int
    """Credited by awards, earns and imports (less what refunds clawed back)."""
    redeemed: int
    """Spent at the program's own counters, rewards and partner merchants (less refunds)."""
    expired: int
    exchanged_in: int
    exchanged_out: int
    """Points that left by exchange, fees excluded."""
    fees: int
    breakage_rate: Decimal | None
    """expired / issued in the window (None when nothing was issued)."""


def _scope(actor: Actor) -> tuple[str, dict[str, Any]]:
    actor.require(Role.FINANCE, Role.OPERATOR, Role.AUDITOR, Role.MERCHANT)
    if actor.is_alliance_wide:
        return "true", {}
    return "p.merchant_id = %(merchant)s", {"merchant": actor.merchant_id}


async def liability_at(db: Database, actor: Actor, *, at: datetime) -> list[Liability]:
    """Outstanding points and their value per program at `at`."""
    condition, params = _scope(actor)
    rows = await db.fetch_all(
        f"""SELECT p.id, coalesce(sum(x.amount), 0), p.point_value
              FROM program p
              LEFT JOIN account a ON a.program_id = p.id AND a.kind = 'member'
              LEFT JOIN posting x ON x.account_id = a.id AND x.created_at < %(at)s
             WHERE {condition}
             GROUP BY p.id ORDER BY p.id""",
        {"at": at, **params},
    )
    return [Liability(r[0], int(r[1]), r[2], int(r[1]) * r[2]) for r in rows]


async def movements(
    db: Database, actor: Actor, *, since: datetime, until: datetime
) -> list[Movements]:
    """What moved per program in [since, until): by the system account each leg hit."""
    if until <= since:
        raise InvalidInput("until must be after since", field=("until",))
    condition, params = _scope(actor)
    rows = await db.fetch_all(
        f"""SELECT p.id,
                   coalesce(-sum(x.amount) FILTER (WHERE a.kind = 'issued'), 0),
                   coalesce(sum(x.amount) FILTER (WHERE a.kind = 'redeemed'), 0),
                   coalesce(sum(x.amount) FILTER (WHERE a.kind = 'expired'), 0),
                   coalesce(-sum(x.amount) FILTER (WHERE a.kind = 'exchanged_in'), 0),
                   coalesce(sum(x.amount) FILTER (WHERE a.kind = 'exchanged_out'), 0),
                   coalesce(sum(x.amount) FILTER (WHERE a.kind = 'fee'), 0)
              FROM program p
              LEFT JOIN account a ON a.program_id = p.id AND a.membership_id IS NULL
              LEFT JOIN posting x ON x.account_id = a.id
                               AND x.created_at >= %(since)s AND x.created_at < %(until)s
             WHERE {condition}
             GROUP BY p.id ORDER BY p.id""",
        {"since": since, "until": until, **params},
    )
    result = []
    for r in rows:
        issued, redeemed, expired, exchanged_in, exchanged_out, fees = (int(v) for v in r[1:7])
        breakage = (Decimal(expired) / issued).quantize(Decimal("0.0001")) if issued > 0 else None
        result.append(
            Movements(r[0], issued, redeemed, expired, exchanged_in, exchanged_out, fees, breakage)
        )
    return result
