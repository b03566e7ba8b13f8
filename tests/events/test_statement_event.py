"""Issuing a settlement statement is an outbox event of its merchant (statement.issued)."""

from __future__ import annotations

import pytest

from alliance.db.engine import Database
from alliance.events.dispatcher import fan_out
from alliance.exchange.service import exchange_points
from alliance.settlement.service import issue_statement
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import OPERATOR
from tests.settlement.helpers import settle


async def test_issue_writes_statement_issued(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await make_alliance(db, ("0.01", "0.02"))
    await rate(db, a.programs[0], a.programs[1], "1/2")
    await exchange_points(
        db, a.member, from_membership_id=a.memberships[0].id,
        to_membership_id=a.memberships[1].id, points=100, idempotency_key=next(keys),
    )  # fmt: skip
    (period,) = [p for p in await settle(db, monkeypatch) if p.obligations]
    merchant_id = a.programs[0].merchant_id
    (statement_id,) = (
        await db.fetch_all(
            "SELECT id FROM settlement_statement WHERE period_id = %(p)s AND merchant_id = %(m)s",
            {"p": period.id, "m": merchant_id},
        )
    )[0]
    await issue_statement(db, OPERATOR, statement_id=statement_id)
    await fan_out(db)  # which names the aggregate
    events = await db.fetch_all(
        "SELECT merchant_id, aggregate, payload->>'statement_id' FROM outbox_event"
        " WHERE topic = 'statement.issued'"
    )
    assert events == [(merchant_id, f"merchant:{merchant_id}", str(statement_id))]
