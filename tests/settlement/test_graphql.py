"""Settlement through GraphQL and HTTP: statements → lines → obligations in a constant
number of SQL statements, and the CSV export with its authorization."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import httpx
import pytest

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from gateway import create_app
from tests.factories import ALLIANCE_FINANCE
from tests.graphql.helpers import ok
from tests.settlement.helpers import settle
from tests.settlement.test_run import _trade

NESTED = """{ settlementStatements(first: 50) { edges { node { net merchant { code }
  period { startsAt } lines(first: 50) { edges { node { kind amount counterparty { code }
  obligations(first: 50) { edges { node { points amount transactionId
  debtor { code } program { code } } } } } } } } } } }"""


async def test_nested_statements_use_a_constant_number_of_sql_statements(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _trade(db)
    await settle(db, monkeypatch)
    with db.count_statements() as small:
        first = await ok(db, ALLIANCE_FINANCE, NESTED)
    await _trade(db)  # three more merchants, twice the obligations
    await settle(db, monkeypatch, days=3)
    with db.count_statements() as large:
        second = await ok(db, ALLIANCE_FINANCE, NESTED)
    assert len(second["settlementStatements"]["edges"]) > len(
        first["settlementStatements"]["edges"]
    )
    assert large.count == small.count
    nets = [Decimal(e["node"]["net"]) for e in second["settlementStatements"]["edges"]]
    assert sum(nets) == 0


async def _token(db: Database, actor: Actor) -> str:
    token, _ = await issue_access_token(db, actor=actor)
    return token


async def test_csv_export_is_streamed_to_the_parties_only(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _trade(db)
    (period,) = [p for p in await settle(db, monkeypatch) if p.obligations]
    merchant_id = a.programs[0].merchant_id
    statement = await db.fetch_one(
        "SELECT id, net FROM settlement_statement WHERE merchant_id = %(m)s", {"m": merchant_id}
    )
    other = await db.fetch_one(
        "SELECT id FROM settlement_statement WHERE merchant_id = %(m)s",
        {"m": a.programs[1].merchant_id},
    )
    assert statement is not None
    assert other is not None
    finance = Actor(
        Role.FINANCE, f"client:f{merchant_id}", f"f{merchant_id}", merchant_id=merchant_id
    )
    app = create_app(db.settings, db=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://alliance.test"
    ) as http:
        url = f"/settlement/statements/{statement[0]}.csv"
        headers = {"Authorization": f"Bearer {await _token(db, finance)}"}
        response = await http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert rows[-1]["line_kind"] == "multilateral_net"
        assert Decimal(rows[-1]["amount"]) == statement[1]
        gross = [r for r in rows if r["line_kind"] in ("receivable", "payable")]
        detail = await http.get(url + "?detail=obligations", headers=headers)
        obligations = list(csv.DictReader(io.StringIO(detail.text)))
        assert len(obligations) == sum(int(r["obligations"]) for r in gross)
        assert all(r["transaction_id"] for r in obligations)
        assert (await http.get(url)).status_code == 401
        foreign = f"/settlement/statements/{other[0]}.csv"
        assert (await http.get(foreign, headers=headers)).status_code == 404
        member = {"Authorization": f"Bearer {await _token(db, a.member)}"}
        assert (await http.get(url, headers=member)).status_code == 403
        assert (await http.get("/settlement/statements/x.csv", headers=headers)).status_code == 404
    assert period.obligations
