"""CSV export of a statement, streamed in batches (flat memory however long it is).

Columns (one row per line, in order):
    statement_id, period_starts_at, period_ends_at, party_merchant_code, status, position,
    line_kind, counterparty_merchant_code, obligation_kind, obligations, points,
    exact_amount, amount
With obligation detail, one row per obligation of each gross line instead:
    statement_id, position, line_kind, obligation_id, transaction_id, obligation_kind,
    debtor_merchant_code, creditor_merchant_code, program_id, points, point_value, amount,
    occurred_at
Merchant codes are empty for the alliance; amounts are plain decimals, times ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, NotFound
from alliance.settlement.queries import (
    StatementRecord,
    lines_of_statements,
    obligations_of_lines,
    statements_by_id,
)

LINE_COLUMNS = (
    "statement_id",
    "period_starts_at",
    "period_ends_at",
    "party_merchant_code",
    "status",
    "position",
    "line_kind",
    "counterparty_merchant_code",
    "obligation_kind",
    "obligations",
    "points",
    "exact_amount",
    "amount",
)
OBLIGATION_COLUMNS = (
    "statement_id",
    "position",
    "line_kind",
    "obligation_id",
    "transaction_id",
    "obligation_kind",
    "debtor_merchant_code",
    "creditor_merchant_code",
    "program_id",
    "points",
    "point_value",
    "amount",
    "occurred_at",
)
BATCH = 1000


def _csv(row: Sequence[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(["" if v is None else v for v in row])
    return out.getvalue()


async def open_statement(db: Database, actor: Actor, statement_id: int) -> StatementRecord:
    """The statement, if the actor may export it (the same rule as reading it)."""
    if actor.role is Role.MEMBER:
        raise Forbidden("members do not see settlement statements")
    found = await statements_by_id(db, actor, [statement_id])
    if statement_id not in found:
        raise NotFound("statement not found")
    return found[statement_id]


async def statement_csv(
    db: Database, actor: Actor, statement: StatementRecord, *, detail: bool = False
) -> AsyncIterator[str]:
    codes = {row[0]: row[1] for row in await db.fetch_all("SELECT id, code FROM merchant")}
    period = await db.fetch_one(
        "SELECT starts_at, ends_at FROM settlement_period WHERE id = %(p)s",
        {"p": statement.period_id},
    )
    assert period is not None
    yield _csv(OBLIGATION_COLUMNS if detail else LINE_COLUMNS)
    after: int | None = None
    while True:
        page = await lines_of_statements(db, actor, [statement.id], first=BATCH, after=after)
        lines, more = page[statement.id]
        for line in lines:
            if not detail:
                yield _csv((
                    statement.id, period[0].isoformat(), period[1].isoformat(),
                    codes.get(statement.merchant_id or 0), statement.status, line.position,
                    line.kind, codes.get(line.counterparty_merchant_id or 0),
                    line.obligation_kind, line.obligations, line.points, line.exact_amount,
                    line.amount,
                ))  # fmt: skip
            elif line.kind in ("receivable", "payable"):
                after_obligation: int | None = None
                while True:
                    found = await obligations_of_lines(db, actor, [line.id], first=BATCH,
                                                       after=after_obligation)  # fmt: skip
                    obligations, more_obligations = found[line.id]
                    for o in obligations:
                        yield _csv((
                            statement.id, line.position, line.kind, o.id, o.transaction_id,
                            o.kind, codes.get(o.debtor_merchant_id),
                            codes.get(o.creditor_merchant_id or 0), o.program_id, o.points,
                            o.point_value, o.amount, o.occurred_at.isoformat(),
                        ))  # fmt: skip
                    if not more_obligations:
                        break
                    after_obligation = obligations[-1].id
        if not more:
            return
        after = lines[-1].position
