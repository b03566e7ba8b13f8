"""The statement lifecycle, exhaustively: every step from every state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import InvalidTransition
from alliance.settlement import service
from alliance.settlement.models import StatementStatus
from alliance.settlement.queries import StatementRecord
from tests.factories import ALLIANCE_FINANCE, finance_actor
from tests.settlement.helpers import settle
from tests.settlement.test_run import _trade

Step = Callable[[Database, int], Awaitable[StatementRecord]]


def steps(merchant_id: int) -> dict[str, Step]:
    party = finance_actor(merchant_id)
    return {
        "issue": lambda db, s: service.issue_statement(db, ALLIANCE_FINANCE, statement_id=s),
        "confirm": lambda db, s: service.confirm_statement(db, party, statement_id=s),
        "dispute": lambda db, s: service.dispute_statement(
            db, party, statement_id=s, reason="line 3 is wrong"
        ),
        "reissue": lambda db, s: service.reissue_statement(
            db, ALLIANCE_FINANCE, statement_id=s, note="checked: correct"
        ),
        "pay": lambda db, s: service.mark_statement_paid(
            db, ALLIANCE_FINANCE, statement_id=s, payment_reference="wire 42"
        ),
    }


PATHS = {  # how to reach each state from draft
    StatementStatus.DRAFT: [],
    StatementStatus.ISSUED: ["issue"],
    StatementStatus.CONFIRMED: ["issue", "confirm"],
    StatementStatus.DISPUTED: ["issue", "dispute"],
    StatementStatus.PAID: ["issue", "confirm", "pay"],
}
ALLOWED = {
    ("issue", StatementStatus.DRAFT): StatementStatus.ISSUED,
    ("confirm", StatementStatus.ISSUED): StatementStatus.CONFIRMED,
    ("dispute", StatementStatus.ISSUED): StatementStatus.DISPUTED,
    ("reissue", StatementStatus.DISPUTED): StatementStatus.ISSUED,
    ("pay", StatementStatus.CONFIRMED): StatementStatus.PAID,
}


@pytest.mark.parametrize("state", list(PATHS))
async def test_every_step_from_every_state(
    db: Database, monkeypatch: pytest.MonkeyPatch, state: StatementStatus
) -> None:
    a = await _trade(db)
    await settle(db, monkeypatch)
    merchant_id = a.programs[0].merchant_id
    for action in steps(merchant_id):
        async with db.autocommit() as conn:  # a fresh statement per action
            await conn.execute(
                text(
                    "TRUNCATE settlement_line, settlement_statement, settlement_period"
                    " RESTART IDENTITY CASCADE"
                )
            )
        await settle(db, monkeypatch)
        row = await db.fetch_one(
            "SELECT id FROM settlement_statement WHERE merchant_id = %(m)s", {"m": merchant_id}
        )
        assert row is not None
        statement_id = row[0]
        for step in PATHS[state]:
            await steps(merchant_id)[step](db, statement_id)
        expected = ALLOWED.get((action, state))
        if expected is None:
            with pytest.raises(InvalidTransition):
                await steps(merchant_id)[action](db, statement_id)
            continue
        record = await steps(merchant_id)[action](db, statement_id)
        assert record.status == expected
        if expected is StatementStatus.DISPUTED:
            assert record.dispute_reason == "line 3 is wrong"
        if expected is StatementStatus.PAID:
            assert record.payment_reference == "wire 42"
    audit = await db.fetch_all("SELECT action FROM audit_record WHERE action LIKE 'statement.%%'")
    assert audit, "every step is audited"
