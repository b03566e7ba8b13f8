"""Exchange through GraphQL: typed userErrors for bad input, the member's flow, replay."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from alliance.db.engine import Database
from tests.exchange.helpers import make_alliance, rate
from tests.factories import OPERATOR, merchant_actor
from tests.graphql.helpers import gid, ok

PUBLISH = """mutation($a: ID!, $b: ID!, $rate: String!, $fee: Decimal!) {
  publishExchangeRate(input: {fromProgramId: $a, toProgramId: $b, rate: $rate,
                              feePercent: $fee}) {
    rate { rate version feePercent fromProgram { code } toProgram { code } }
    userErrors { code message field } } }"""
QUOTE = """mutation($f: ID!, $t: ID!, $p: Int!) {
  exchangeQuote(input: {fromMembershipId: $f, toMembershipId: $t, points: $p}) {
    quote { id fee pointsOut remainder value rate { rate } } userErrors { code field } } }"""
EXCHANGE = """mutation($q: ID!, $k: String!) {
  exchangePoints(input: {quoteId: $q, idempotencyKey: $k}) {
    exchange { id pointsIn fee pointsOut fromMembership { id } rate { version } }
    fromEntry { kind points } toEntry { kind points } fromBalance toBalance replayed
    userErrors { code field } } }"""


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e.get("field")) for e in payload["userErrors"]]


async def test_rates_are_published_and_bad_ones_refused_with_typed_errors(db: Database) -> None:
    a = await make_alliance(db, points=0)
    ids = {"a": gid("Program", a.programs[0].id), "b": gid("Program", a.programs[1].id)}
    done = await ok(db, OPERATOR, PUBLISH, {**ids, "rate": "3/2", "fee": "1.5"})
    assert done["publishExchangeRate"]["rate"]["rate"] == "3/2"
    for bad, code in (
        ("abc", "INVALID_INPUT"),
        ("-1", "INVALID_INPUT"),
        ("1/0", "INVALID_INPUT"),
        ("10000000000", "INVALID_INPUT"),
    ):
        refused = await ok(db, OPERATOR, PUBLISH, {**ids, "rate": bad, "fee": "0"})
        assert _errors(refused["publishExchangeRate"]) == [(code, ["input", "rate"])]
    refused = await ok(db, OPERATOR, PUBLISH, {**ids, "rate": "1", "fee": "100"})
    assert _errors(refused["publishExchangeRate"])[0][0] == "INVALID_INPUT"
    back = {"a": ids["b"], "b": ids["a"]}
    cycle = await ok(db, OPERATOR, PUBLISH, {**back, "rate": "1", "fee": "0"})
    assert _errors(cycle["publishExchangeRate"])[0][0] == "PROFITABLE_CYCLE"
    fair = await ok(db, OPERATOR, PUBLISH, {**back, "rate": "2/3", "fee": "0"})
    assert fair["publishExchangeRate"]["rate"]["version"] == 1


async def test_member_quotes_and_exchanges_through_graphql(db: Database) -> None:
    a = await make_alliance(db, ("0.01", "0.02"), points=1000)
    await rate(db, a.programs[0], a.programs[1], "1/2", fee_percent=Decimal(1))
    ids = {"f": gid("Membership", a.memberships[0].id), "t": gid("Membership", a.memberships[1].id)}
    quoted = (await ok(db, a.member, QUOTE, {**ids, "p": 301}))["exchangeQuote"]["quote"]
    # fee ceil(3.01) = 4; 297 / 2 = 148 and a half point left over
    assert (quoted["fee"], quoted["pointsOut"], quoted["remainder"]) == (4, 148, "0.500000")
    assert Decimal(quoted["value"]) == Decimal("2.96")
    first = (await ok(db, a.member, EXCHANGE, {"q": quoted["id"], "k": "x-1"}))["exchangePoints"]
    assert first["userErrors"] == []
    assert (first["fromBalance"], first["toBalance"], first["replayed"]) == (699, 1148, False)
    assert first["fromEntry"] == {"kind": "EXCHANGE", "points": -301}
    assert first["toEntry"] is None  # the member's token sees its own merchant's memberships
    again = (await ok(db, a.member, EXCHANGE, {"q": quoted["id"], "k": "x-1"}))["exchangePoints"]
    assert again["replayed"] is True
    assert again["exchange"]["id"] == first["exchange"]["id"]
    reused = (await ok(db, a.member, EXCHANGE, {"q": quoted["id"], "k": "x-2"}))["exchangePoints"]
    assert _errors(reused) == [("QUOTE_EXPIRED", ["input", "quoteId"])]
    bad = (await ok(db, a.member, QUOTE, {**ids, "p": 0}))["exchangeQuote"]
    assert _errors(bad) == [("INVALID_INPUT", ["input", "points"])]
    mine = await ok(db, a.member, "{ myExchanges { edges { node { pointsIn } } } }")
    assert mine["myExchanges"]["edges"] == [{"node": {"pointsIn": 301}}]
    seen = await ok(
        db,
        merchant_actor(a.programs[1].merchant_id),
        "query($id: ID!) { node(id: $id) { ... on Exchange { pointsOut } } }",
        {"id": first["exchange"]["id"]},
    )
    assert seen["node"] == {"pointsOut": 148}
