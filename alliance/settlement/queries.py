"""Reading periods, statements, their lines and the obligations behind each line.

A merchant (its app or its finance team) sees the statements it is party to; the
alliance-wide roles see all; members see none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.settlement.run import PERIOD_COLUMNS, PeriodRecord


@dataclass(frozen=True, slots=True)
class StatementRecord:
    id: int
    period_id: int
    merchant_id: int | None
    status: str
    receivable: Decimal
    payable: Decimal
    net: Decimal
    rounding: Decimal
    dispute_reason: str | None
    payment_reference: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LineRecord:
    id: int
    statement_id: int
    position: int
    kind: str
    counterparty_merchant_id: int | None
    obligation_kind: str | None
    debtor_merchant_id: int | None
    creditor_merchant_id: int | None
    obligations: int
    points: int
    exact_amount: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ObligationRecord:
    id: int
    transaction_id: int
    kind: str
    debtor_merchant_id: int
    creditor_merchant_id: int | None
    program_id: int
    member_id: int
    points: int
    point_value: Decimal
    amount: Decimal
    occurred_at: datetime


SETTLED_OBLIGATION = """EXISTS (
    SELECT 1 FROM settlement_period p
     WHERE p.status = 'closed' AND o.id <= p.watermark AND o.occurred_at < p.ends_at
       AND (o.id > p.previous_watermark
            OR o.occurred_at >= coalesce(p.previous_ends_at, '-infinity'::timestamptz))
       AND NOT EXISTS (
           SELECT 1 FROM settlement_statement s
            WHERE s.period_id = p.id AND s.status <> 'paid'
              AND (s.merchant_id = o.debtor_merchant_id
                   OR s.merchant_id IS NOT DISTINCT FROM o.creditor_merchant_id)))"""
"""SQL on an obligation `o`: settled, i.e. in a closed period whose statements for both of
its parties (the alliance's, for a fee) are paid."""

STATEMENT_COLUMNS = ", ".join(f"s.{name}" for name in StatementRecord.__slots__)
LINE_COLUMNS = ", ".join(f"l.{name}" for name in LineRecord.__slots__)
OBLIGATION_COLUMNS = ", ".join(f"o.{name}" for name in ObligationRecord.__slots__)
_PERIOD_COLUMNS = ", ".join(f"p.{c.name}" for c in PERIOD_COLUMNS)


def statement_scope(actor: Actor) -> tuple[str, dict[str, Any]]:
    """SQL condition on `s` (a settlement_statement) for what the actor may see."""
    if actor.is_alliance_wide:
        return "true", {}
    if actor.role in (Role.MERCHANT, Role.FINANCE):
        return "s.merchant_id = %(party)s", {"party": actor.merchant_id}
    return "false", {}


async def statements_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, StatementRecord]:
    condition, params = statement_scope(actor)
    rows = await db.fetch_all(
        f"SELECT {STATEMENT_COLUMNS} FROM settlement_statement s"
        f" WHERE s.id = ANY(%(ids)s) AND {condition}",
        {"ids": list(ids), **params},
    )
    return {row[0]: StatementRecord(*row) for row in rows}


async def statements_page(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    period_id: int | None = None,
    status: str | None = None,
) -> tuple[list[StatementRecord], bool]:
    """Newest first."""
    condition, params = statement_scope(actor)
    rows = await db.fetch_all(
        f"SELECT {STATEMENT_COLUMNS} FROM settlement_statement s WHERE {condition}"
        " AND s.id < coalesce(%(after)s::bigint, 9223372036854775807)"
        " AND (%(period)s::bigint IS NULL OR s.period_id = %(period)s::bigint)"
        " AND (%(status)s::text IS NULL OR s.status = %(status)s::text)"
        " ORDER BY s.id DESC LIMIT %(limit)s",
        {"after": after, "period": period_id, "status": status, "limit": first + 1, **params},
    )
    return [StatementRecord(*row) for row in rows[:first]], len(rows) > first


async def periods_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, PeriodRecord]:
    """Periods themselves (dates, counts) are not secret to any finance-facing role."""
    if actor.role is Role.MEMBER:
        return {}
    rows = await db.fetch_all(
        f"SELECT {_PERIOD_COLUMNS} FROM settlement_period p WHERE p.id = ANY(%(ids)s)",
        {"ids": list(ids)},
    )
    return {row[0]: PeriodRecord(*row) for row in rows}


async def periods_page(
    db: Database, actor: Actor, *, first: int, after: int | None
) -> tuple[list[PeriodRecord], bool]:
    if actor.role is Role.MEMBER:
        return [], False
    rows = await db.fetch_all(
        f"SELECT {_PERIOD_COLUMNS} FROM settlement_period p"
        " WHERE p.id < coalesce(%(after)s::bigint, 9223372036854775807)"
        " ORDER BY p.id DESC LIMIT %(limit)s",
        {"after": after, "limit": first + 1},
    )
    return [PeriodRecord(*row) for row in rows[:first]], len(rows) > first


async def lines_of_statements(
    db: Database, actor: Actor, statement_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, tuple[list[LineRecord], bool]]:
    """One page of lines per statement, in their order, in one statement."""
    condition, params = statement_scope(actor)
    rows = await db.fetch_all(
        f"SELECT {LINE_COLUMNS} FROM unnest(%(ids)s::bigint[]) AS parent(id)"
        " JOIN settlement_statement s ON s.id = parent.id AND "
        + condition
        + " CROSS JOIN LATERAL (SELECT * FROM settlement_line l WHERE l.statement_id = s.id"
        " AND l.position > coalesce(%(after)s::int, 0) ORDER BY l.position"
        " LIMIT %(limit)s) l",
        {"ids": list(statement_ids), "after": after, "limit": first + 1, **params},
    )
    pages: dict[int, list[LineRecord]] = {statement_id: [] for statement_id in statement_ids}
    for row in rows:
        pages[row[1]].append(LineRecord(*row))
    return {key: (items[:first], len(items) > first) for key, items in pages.items()}


# A gross line's obligations: its period's (settlement_period_obligations, two index
# ranges) of its kind, debtor and creditor.
_LINE_OBLIGATIONS = (
    "FROM settlement_line l JOIN settlement_statement s ON s.id = l.statement_id"
    " CROSS JOIN LATERAL settlement_period_obligations(s.period_id) o"
    " WHERE o.kind = l.obligation_kind AND o.debtor_merchant_id = l.debtor_merchant_id"
    " AND o.creditor_merchant_id IS NOT DISTINCT FROM l.creditor_merchant_id"
)


async def obligations_of_lines(
    db: Database, actor: Actor, line_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, tuple[list[ObligationRecord], bool]]:
    """The obligations each gross line sums, by id, one page per line in one statement:
    the trail from a statement to the ledger transactions."""
    condition, params = statement_scope(actor)
    rows = await db.fetch_all(
        f"SELECT parent.id, o.* FROM unnest(%(lines)s::bigint[]) AS parent(id)"
        f" CROSS JOIN LATERAL (SELECT {OBLIGATION_COLUMNS} {_LINE_OBLIGATIONS}"
        f" AND l.id = parent.id AND {condition}"
        " AND o.id > coalesce(%(after)s::bigint, 0) ORDER BY o.id LIMIT %(limit)s) o",
        {"lines": list(line_ids), "after": after, "limit": first + 1, **params},
    )
    pages: dict[int, list[ObligationRecord]] = {line_id: [] for line_id in line_ids}
    for row in rows:
        pages[row[0]].append(ObligationRecord(*row[1:]))
    return {key: (items[:first], len(items) > first) for key, items in pages.items()}
