"""Reconciliation: the report of a clean period matches to the cent; `verify` finds every
kind of settlement corruption."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import Forbidden, NotFound
from alliance.ledger.verify import verify_ledger
from alliance.settlement.reconcile import reconcile_period
from tests.database import corrupt
from tests.factories import ALLIANCE_FINANCE, OPERATOR, finance_actor, member_actor
from tests.settlement.helpers import settle
from tests.settlement.test_run import _trade

CORRUPTIONS = {
    "exchange_postings_match": "UPDATE exchange SET points_out = points_out + 1",
    "cross_merchant_transactions_have_obligations": "DELETE FROM settlement_obligation"
    " WHERE id = (SELECT min(id) FROM settlement_obligation WHERE kind = 'exchange')",
    "statements_equal_obligations": "UPDATE settlement_line SET exact_amount = exact_amount"
    " + 0.000001 WHERE id = (SELECT min(id) FROM settlement_line WHERE kind = 'payable')",
    "statement_nets": "UPDATE settlement_statement SET net = net + 0.01, receivable ="
    " receivable + 0.01 WHERE id = (SELECT min(id) FROM settlement_statement)",
    "settlement_references_exist": "UPDATE exchange SET rate_id = rate_id + 1000",
    "periods_follow_each_other": "UPDATE settlement_period SET previous_watermark ="
    " previous_watermark + 1, watermark = watermark + 1"
    " WHERE id = (SELECT max(id) FROM settlement_period)",
}


async def _repair(db: Database) -> None:
    async with db.autocommit() as conn:
        await conn.execute(text(
            "TRUNCATE settlement_line, settlement_statement, settlement_period,"
            " settlement_obligation, exchange, exchange_quote, lot_consumption, lot, posting,"
            " ledger_transaction, outbox_event CASCADE"
        ))  # fmt: skip
        await conn.execute(text("UPDATE account SET balance = 0, debt = 0 WHERE kind = 'member'"))


async def test_a_clean_period_reconciles_to_the_cent(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _trade(db)
    period = next(p for p in await settle(db, monkeypatch) if p.obligations)
    report = await reconcile_period(db, ALLIANCE_FINANCE, period_id=period.id)
    assert report.differences == []
    assert len(report.rows) == 6  # 3 exchange pairs, 2 with fees, 1 partner pair
    assert all(row.matches for row in report.rows)
    merchant = a.programs[2].merchant_id
    own = await reconcile_period(db, finance_actor(merchant), period_id=period.id)
    assert own.rows
    assert all(merchant in (r.debtor_merchant_id, r.creditor_merchant_id) for r in own.rows)
    with pytest.raises(Forbidden):
        await reconcile_period(db, member_actor(a.memberships[0], merchant), period_id=period.id)
    with pytest.raises(NotFound):
        await reconcile_period(db, OPERATOR, period_id=period.id + 99)


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
async def test_verify_finds_settlement_corruption(
    db: Database, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    await _trade(db)
    await settle(db, monkeypatch)
    await settle(db, monkeypatch, days=3)
    assert await verify_ledger(db) == []
    await corrupt(db, CORRUPTIONS[check])
    found = {violation.check for violation in await verify_ledger(db)}
    await _repair(db)
    assert check in found
