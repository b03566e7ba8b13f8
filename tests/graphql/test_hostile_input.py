"""Hostile strings in every text input: refused with a clear error or stored verbatim,
never a 500, and nothing half-written (the ledger verifies after the test)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.rules.engine import Action
from alliance.rules.models import RuleKind
from alliance.rules.terms import TermsInput
from tests.factories import OPERATOR, backdated_rule, make_membership, make_program, merchant_actor
from tests.graphql.helpers import gid, run

HOSTILE = [
    "'; DROP TABLE member; --",
    '" OR 1=1 --',
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "\x00nul",
    "\u202eevil\u202c",  # right-to-left override
    "👩‍👩‍👧‍👦🏳️‍🌈",  # ZWJ sequences
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "é" * 3 + "e\u0301",  # composed and decomposed
    "\t\n\r",
    " ",
    "",
    "x" * 100_000,
    "积分清零 普通 黄金 白金",
]

# Each text input of a mutation, with the rest of a valid input around it.
FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "merchant code": ("createMerchant", "CreateMerchantInput", {"code": "$", "name": "n"}),
    "merchant name": ("createMerchant", "CreateMerchantInput", {"code": "ok-code", "name": "$"}),
    "member number": ("enrollMember", "EnrollMemberInput", {"programId": "P", "memberNumber": "$"}),
    "display name": ("enrollMember", "EnrollMemberInput",
                     {"programId": "P", "memberNumber": "n-1", "displayName": "$"}),
    "award reason": ("awardPoints", "MovePointsInput",
                     {"membershipId": "M", "points": 1, "reason": "$", "idempotencyKey": "k"}),
    "idempotency key": ("awardPoints", "MovePointsInput",
                        {"membershipId": "M", "points": 1, "reason": "r", "idempotencyKey": "$"}),
    "order id": ("recordPurchase", "RecordPurchaseInput",
                 {"membershipId": "M", "orderId": "$", "amount": "10"}),
    "sku and category": ("recordPurchase", "RecordPurchaseInput",
                         {"membershipId": "M", "orderId": "o", "amount": "10",
                          "lines": [{"sku": "$", "category": "$", "amount": "10"}]}),
    "rule code and name": ("createEarningRule", "CreateEarningRuleInput",
                           {"programId": "P", "code": "$", "kind": "PURCHASE", "name": "$",
                            "terms": {"pointsPerUnit": "1"}}),
    "action reference": ("recordAction", "RecordActionInput",
                         {"membershipId": "M", "action": "SHARE", "idempotencyKey": "k",
                          "reference": "$"}),
    "refund id": ("reversePurchase", "ReversePurchaseInput",
                  {"orderId": "o-1", "refundId": "$", "amount": "1"}),
    "segments": ("setMemberSegments", "SetMemberSegmentsInput",
                 {"membershipId": "M", "segments": ["$"]}),
}  # fmt: skip


def _fill(value: Any, text: str, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, text, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, text, ids) for v in value]
    if value == "$":
        return text
    return ids.get(value, value) if isinstance(value, str) else value


@pytest.mark.parametrize("field", sorted(FIELDS))
async def test_hostile_strings_are_refused_or_kept_verbatim(db: Database, field: str) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    merchant = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await backdated_rule(db, program, "share", RuleKind.ACTION,
                         TermsInput(action=Action.SHARE, points=1))  # fmt: skip
    ids = {"P": gid("Program", program.id), "M": gid("Membership", membership.id)}
    await run(db, merchant, """mutation($m: ID!, $at: DateTime!) { recordPurchase(input: {
        membershipId: $m, orderId: "o-1", amount: "10", occurredAt: $at}) { replayed } }""",
              {"m": ids["M"], "at": datetime.now(UTC).isoformat()})  # fmt: skip
    mutation, input_type, template = FIELDS[field]
    actor = OPERATOR if mutation == "createMerchant" else merchant
    outcomes: dict[str, str] = {}
    for n, text in enumerate(HOSTILE):
        variables = {"input": _fill(template, text, ids)}
        if "idempotencyKey" in variables["input"] and field != "idempotency key":
            variables["input"]["idempotencyKey"] = f"k{n}"
        if "orderId" in variables["input"] and field not in ("order id", "refund id"):
            variables["input"]["orderId"] = f"o{n}-{field[:3]}"
        result = await run(
            db,
            actor,
            f"""mutation($input: {input_type}!) {{
            {mutation}(input: $input) {{ userErrors {{ code message field }} }} }}""",
            variables,
        )
        for error in result.get("errors", []):
            code = error.get("extensions", {}).get("code")
            assert code not in (None, "INTERNAL_SERVER_ERROR"), (field, text[:40], error)
        payload = (result["data"] or {}).get(mutation)
        user_errors = (payload or {}).get("userErrors", [])
        for user_error in user_errors:
            assert user_error["code"], user_error
            assert user_error["message"], user_error
        outcomes[text] = "errors" if "errors" in result else (
            user_errors[0]["code"] if user_errors else "ok")  # fmt: skip
    # Control characters never reach the database (PostgreSQL text cannot even hold NUL).
    assert outcomes["\x00nul"] != "ok"
    assert outcomes["\u202eevil\u202c"] != "ok"
    if field == "award reason":  # free text is kept verbatim, injection strings included
        assert outcomes["'; DROP TABLE member; --"] == "ok"
        stored = await db.fetch_all("SELECT reason FROM ledger_transaction", {})
        assert {"'; DROP TABLE member; --", "积分清零 普通 黄金 白金"} <= {r[0] for r in stored}
