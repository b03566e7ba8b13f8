"""Cross-merchant activity and settlement runs at a chosen clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.settlement import run as settlement_run
from alliance.settlement.run import PeriodRecord, run_settlement
from alliance.settlement.statements import Group
from tests.factories import ALLIANCE_FINANCE


@contextmanager
def clock(monkeypatch: pytest.MonkeyPatch, days: float) -> Iterator[None]:
    """The settlement clock `days` ahead: today's period has ended by then."""
    moment = datetime.now(UTC) + timedelta(days=days)
    monkeypatch.setattr(settlement_run, "utcnow", lambda: moment)
    try:
        yield
    finally:
        monkeypatch.setattr(settlement_run, "utcnow", lambda: datetime.now(UTC))


async def settle(
    db: Database, monkeypatch: pytest.MonkeyPatch, days: float = 2
) -> list[PeriodRecord]:
    with clock(monkeypatch, days):
        return await run_settlement(db, ALLIANCE_FINANCE)


async def groups_by_brute_force(db: Database, obligation_ids: list[int]) -> list[Group]:
    """The gross groups of these obligations, summed in Python."""
    rows = await db.fetch_all(
        "SELECT kind, debtor_merchant_id, creditor_merchant_id, points, amount"
        " FROM settlement_obligation WHERE id = ANY(%(ids)s)",
        {"ids": obligation_ids},
    )
    sums: dict[tuple[str, int, int | None], list[Decimal]] = defaultdict(
        lambda: [Decimal(0), Decimal(0), Decimal(0)]
    )
    for kind, debtor, creditor, points, amount in rows:
        entry = sums[(kind, debtor, creditor)]
        entry[0] += 1
        entry[1] += points
        entry[2] += amount
    return [Group(k[0], k[1], k[2], int(v[0]), int(v[1]), v[2]) for k, v in sums.items()]


async def statement_lines(db: Database, period_id: int) -> list[tuple[object, ...]]:
    rows = await db.fetch_all(
        "SELECT s.merchant_id, l.position, l.kind, l.counterparty_merchant_id,"
        " l.obligation_kind, l.obligations, l.points, l.exact_amount, l.amount"
        " FROM settlement_statement s JOIN settlement_line l ON l.statement_id = s.id"
        " WHERE s.period_id = %(p)s ORDER BY s.merchant_id NULLS FIRST, l.position",
        {"p": period_id},
    )
    return [tuple(row) for row in rows]
