"""The counter discount over GraphQL: authorize against a bill, capture less, void."""

from __future__ import annotations

from decimal import Decimal

from alliance.db.engine import Database
from tests.factories import give_points, make_membership, make_program, merchant_actor
from tests.graphql.helpers import gid, ok

AUTHORIZE = """mutation($input: AuthorizeDiscountInput!) { authorizeDiscount(input: $input) {
  hold { id points status membership { balance { points held spendable } } }
  moneyOff userErrors { code field } } }"""
CAPTURE = """mutation($h: ID!, $p: Int) { captureDiscount(input: {holdId: $h, points: $p}) {
  hold { status captured } entry { points balanceAfter kind } replayed
  userErrors { code field } } }"""
VOID = """mutation($h: ID!) { voidDiscount(input: {holdId: $h}) {
  hold { status } userErrors { code field } } }"""


async def test_discount_at_the_counter(db: Database) -> None:
    program = await make_program(db, point_value=Decimal("0.10"))
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 500)
    actor = merchant_actor(program.merchant_id)
    base = {"membershipId": gid("Membership", membership.id), "idempotencyKey": "bill-42"}

    too_much = await ok(db, actor, AUTHORIZE, {"input": {**base, "points": 300,
                                                          "billAmount": "25.00"}})  # fmt: skip
    assert too_much["authorizeDiscount"]["userErrors"] == [
        {"code": "INVALID_INPUT", "field": ["input", "points"]}]  # fmt: skip

    data = await ok(db, actor, AUTHORIZE, {"input": {**base, "points": 200,
                                                      "billAmount": "25.00"}})  # fmt: skip
    payload = data["authorizeDiscount"]
    assert payload["moneyOff"] == "20.00"
    hold = payload["hold"]
    assert (hold["points"], hold["status"]) == (200, "authorized")
    assert hold["membership"]["balance"] == {"points": 500, "held": 200, "spendable": 300}

    captured = await ok(db, actor, CAPTURE, {"h": hold["id"], "p": 150})
    assert captured["captureDiscount"] == {
        "hold": {"status": "captured", "captured": 150},
        "entry": {"points": -150, "balanceAfter": 350, "kind": "SPEND"},
        "replayed": False, "userErrors": [],
    }  # fmt: skip
    refused = await ok(db, actor, VOID, {"h": hold["id"]})
    assert refused["voidDiscount"]["userErrors"] == [
        {"code": "INACTIVE", "field": ["input", "holdId"]}]  # fmt: skip

    second = await ok(
        db,
        actor,
        AUTHORIZE,
        {"input": {**base, "idempotencyKey": "bill-43", "points": 100, "billAmount": "50"}},
    )
    voided = await ok(db, actor, VOID, {"h": second["authorizeDiscount"]["hold"]["id"]})
    assert voided["voidDiscount"] == {"hold": {"status": "voided"}, "userErrors": []}


async def test_the_programs_discount_policy(db: Database) -> None:
    program = await make_program(db, point_value=Decimal("0.10"))
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 500)
    actor = merchant_actor(program.merchant_id)
    policy = await ok(db, actor, """mutation($p: ID!) { setDiscountPolicy(input: {
        programId: $p, maxShare: "0.5", minPoints: 20}) {
        program { discountMaxShare discountMinPoints } userErrors { code field } } }""",
                      {"p": gid("Program", program.id)})  # fmt: skip
    assert policy["setDiscountPolicy"] == {
        "program": {"discountMaxShare": "0.500", "discountMinPoints": 20},
        "userErrors": [],
    }
    base = {"membershipId": gid("Membership", membership.id), "billAmount": "30.00"}
    for n, (points, outcome) in enumerate(((10, "INVALID_INPUT"), (151, "INVALID_INPUT"),
                                           (150, None))):  # fmt: skip
        data = await ok(db, actor, AUTHORIZE, {"input": {**base, "points": points,
                                                          "idempotencyKey": f"b{n}"}})  # fmt: skip
        errors = data["authorizeDiscount"]["userErrors"]
        assert (errors[0]["code"] if errors else None) == outcome, (points, errors)
    refused = await ok(db, actor, """mutation($p: ID!) { setDiscountPolicy(input: {
        programId: $p, maxShare: "1.5"}) { userErrors { code field } } }""",
                       {"p": gid("Program", program.id)})  # fmt: skip
    assert refused["setDiscountPolicy"]["userErrors"] == [
        {"code": "INVALID_INPUT", "field": ["input", "maxShare"]}]  # fmt: skip


REFUND = """mutation($h: ID!, $p: Int!, $r: String!) { refundDiscount(input: {holdId: $h,
  points: $p, refundId: $r}) { entry { points balanceAfter kind } replayed
  userErrors { code field } } }"""


async def test_a_refunded_bill_gives_the_points_back(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 300)
    actor = merchant_actor(program.merchant_id)
    held = await ok(db, actor, AUTHORIZE, {"input": {
        "membershipId": gid("Membership", membership.id), "idempotencyKey": "k",
        "points": 200, "billAmount": "100"}})  # fmt: skip
    hold_id = held["authorizeDiscount"]["hold"]["id"]
    early = await ok(db, actor, REFUND, {"h": hold_id, "p": 10, "r": "early"})
    assert early["refundDiscount"]["userErrors"] == [
        {"code": "INACTIVE", "field": ["input", "holdId"]}]  # fmt: skip
    await ok(db, actor, CAPTURE, {"h": hold_id, "p": 150})
    first = await ok(db, actor, REFUND, {"h": hold_id, "p": 100, "r": "r1"})
    assert first["refundDiscount"] == {
        "entry": {"points": 100, "balanceAfter": 250, "kind": "REFUND"}, "replayed": False,
        "userErrors": []}  # fmt: skip
    again = await ok(db, actor, REFUND, {"h": hold_id, "p": 100, "r": "r1"})
    assert again["refundDiscount"]["replayed"] is True
    too_much = await ok(db, actor, REFUND, {"h": hold_id, "p": 60, "r": "r2"})
    assert too_much["refundDiscount"]["userErrors"] == [
        {"code": "INVALID_INPUT", "field": ["input", "points"]}]  # fmt: skip
    rest = await ok(db, actor, REFUND, {"h": hold_id, "p": 50, "r": "r3"})
    assert rest["refundDiscount"]["entry"]["balanceAfter"] == 300
