"""Every role against every operation, including what each must not do.

Two merchants, A and B, each with a program and one member holding points. Each
row names an operation on A's side or B's, who performs it, and the outcome:

- ok         done / visible
- FORBIDDEN  the role may never do this (a GraphQL error)
- NOT_FOUND  the object is not the actor's (a userError; same as a missing one)
- hidden     a read that returns null / an empty list, as for a missing object
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.identity.models import ConsentPurpose, IdentifierKind
from alliance.identity.service import set_consent, start_verification
from alliance.ledger.holds import authorize_hold
from alliance.rules.earning import record_purchase
from alliance.rules.engine import Action, Purchase
from alliance.rules.models import RuleKind
from alliance.rules.terms import TermsInput
from tests.authz.outcomes import outcome
from tests.factories import (
    ALLIANCE_FINANCE,
    AUDITOR,
    OPERATOR,
    backdated_rule,
    finance_actor,
    give_points,
    make_ladder,
    make_membership,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
    qualify,
)
from tests.graphql.helpers import gid, run
from tests.identity.helpers import code_for, link, same_person

ROLES = ("operator", "auditor", "finance_wide", "finance_a", "merchant_a", "member_a")


@dataclass
class World:
    actors: dict[str, Actor]
    ids: dict[str, str]


@pytest.fixture
async def world(db: Database) -> World:
    merchant_a, merchant_b = await make_merchant(db), await make_merchant(db)
    program_a, program_b = await make_program(db, merchant_a), await make_program(db, merchant_b)
    membership_a = await make_membership(db, program_a)
    membership_b = await make_membership(db, program_b)
    await give_points(db, membership_a, program_a, 100)
    await give_points(db, membership_b, program_b, 100)
    for program, membership in ((program_a, membership_a), (program_b, membership_b)):
        await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                             TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
        await backdated_rule(db, program, "share", RuleKind.ACTION,
                             TermsInput(action=Action.SHARE, points=1))  # fmt: skip
        await record_purchase(
            db, merchant_actor(program.merchant_id), membership_id=membership.id,
            order_id="order", purchase=Purchase(Decimal(100), datetime.now(UTC)), currency="CNY",
        )  # fmt: skip
        await make_ladder(db, program)
        await qualify(db, membership, program, spend=1000)  # into gold: a tier history
    # Identity: member A is also B's member (linked), consents to A, has a code on its way.
    linked_b = await make_membership(db, program_b)
    await same_person(db, linked_b.id, membership_a.member_id)
    await set_consent(db, member_actor(membership_a, merchant_a.id), merchant_id=merchant_a.id,
                      purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
    await link(db, member_actor(membership_a, merchant_a.id), membership_a,
               "li.na@example.com", IdentifierKind.EMAIL)  # fmt: skip
    verification = await start_verification(
        db, merchant_actor(merchant_a), membership_id=membership_a.id,
        kind=IdentifierKind.PHONE, identifier="+8613900000001",
    )  # fmt: skip
    hold_a = await authorize_hold(
        db, merchant_actor(merchant_a), membership_id=membership_a.id, points=10,
        kind="discount", reason="bill", idempotency_key="world-hold",
    )  # fmt: skip
    return World(
        actors={
            "operator": OPERATOR,
            "auditor": AUDITOR,
            "finance_wide": ALLIANCE_FINANCE,
            "finance_a": finance_actor(merchant_a),
            "merchant_a": merchant_actor(merchant_a),
            "member_a": member_actor(membership_a, merchant_a.id),
        },
        ids={
            "merchant_a": gid("Merchant", merchant_a.id),
            "program_a": gid("Program", program_a.id),
            "program_b": gid("Program", program_b.id),
            "membership_a": gid("Membership", membership_a.id),
            "hold_a": gid("Hold", hold_a.id),
            "membership_b": gid("Membership", membership_b.id),
            "member_a": gid("Member", membership_a.member_id),
            "member_b": gid("Member", membership_b.member_id),
            "membership_a_at_b": gid("Membership", linked_b.id),
            "verification_a": gid("Verification", verification.id),
            "code_a": await code_for(db, verification.id),
        },
    )


_keys = itertools.count()


def _move(kind: str, membership: str) -> tuple[str, Any]:
    query = f"""mutation($input: MovePointsInput!) {{ {kind}(input: $input) {{
        entry {{ id }} userErrors {{ code }} }} }}"""
    return query, lambda ids: {
        "input": {
            "membershipId": ids[membership],
            "points": 1,
            "reason": "matrix",
            "idempotencyKey": f"m{next(_keys)}",
        }
    }


def _set_ladder(program: str) -> tuple[str, Any]:
    query = """mutation($input: SetTierLadderInput!) { setTierLadder(input: $input) {
        policy { version } userErrors { code } } }"""
    return query, lambda ids: {
        "input": {
            "programId": ids[program],
            "basis": "POINTS",
            "windowDays": 90,
            "graceDays": 0,
            "tiers": [{"code": "member", "name": "Member", "threshold": "0"}],
        }
    }


def _read_tier(membership: str) -> tuple[str, Any]:
    query = """query($id: ID!) { membership(id: $id) { tier { code }
        tierProgress { qualifyingTotal current { code } }
        tierHistory { edges { node { reason } } } } }"""
    return query, lambda ids: {"id": ids[membership]}


def _member_data(kind: str, member: str) -> tuple[str, Any]:
    field = "document" if kind == "exportMyData" else "erasedAt"
    query = f"""mutation($m: ID) {{ {kind}(input: {{memberId: $m}}) {{ {field}
        userErrors {{ code }} }} }}"""
    return query, lambda ids: {"m": ids[member]}


def _consent(kind: str) -> tuple[str, Any]:
    query = f"""mutation($m: ID!) {{ {kind}(input: {{merchantId: $m, purpose: MARKETING}}) {{
        consent {{ purpose }} userErrors {{ code }} }} }}"""
    return query, lambda ids: {"m": ids["merchant_a"]}


_BALANCES = """query($m: ID!) { allianceBalances(membershipId: $m) { totalValue
    lines { edges { node { points } } } } }"""
IDENTITY_OPERATIONS: dict[str, tuple[str, Any]] = {
    **{
        f"startVerification({side})": (
            """mutation($m: ID!) { startVerification(input: {membershipId: $m,
            phone: "+86 139 0000 0002"}) { verification { id } userErrors { code } } }""",
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"]},
        )
        for side in "AB"
    },
    "confirmVerification(A)": (
        """mutation($v: ID!, $c: String!) { confirmVerification(input: {verificationId: $v,
        code: $c}) { membership { id } userErrors { code } } }""",
        lambda ids: {"v": ids["verification_a"], "c": ids["code_a"]},
    ),
    "grantConsent(A)": _consent("grantConsent"),
    "withdrawConsent(A)": _consent("withdrawConsent"),
    **{
        f"read consents({side})": (
            """query($m: ID!) { consents(memberId: $m) { edges { node { purpose } } } }""",
            lambda ids, side=side: {"m": ids[f"member_{side.lower()}"]},
        )
        for side in "AB"
    },
    **{
        f"allianceBalances({side})": (
            _BALANCES,
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"]},
        )
        for side in "AB"
    },
    "mergeMembers": (
        """mutation($s: ID!, $a: ID!) { mergeMembers(input: {survivorId: $s, absorbedId: $a,
        reason: "dup", idempotencyKey: "merge"}) { merge { pointsMoved } userErrors { code } } }""",
        lambda ids: {"s": ids["member_a"], "a": ids["member_b"]},
    ),
    **{
        f"unlinkMembership({side})": (
            """mutation($m: ID!) { unlinkMembership(input: {membershipId: $m, reason: "x",
            idempotencyKey: "unlink"}) {
            membership { id } userErrors { code } } }""",
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"]},
        )
        for side in ("A", "B", "A_at_B")
    },
    "exportMyData(A)": _member_data("exportMyData", "member_a"),
    "exportMyData(B)": _member_data("exportMyData", "member_b"),
    "eraseMember(A)": _member_data("eraseMember", "member_a"),
    "eraseMember(B)": _member_data("eraseMember", "member_b"),
    "setPrivacyPolicy": (
        """mutation { setPrivacyPolicy(input: {maxAttempts: 3}) { policy { maxAttempts }
        userErrors { code } } }""",
        lambda ids: None,
    ),
    "read privacyPolicy": ("{ privacyPolicy { maxAttempts } }", lambda ids: None),
    "read member(A) identifiers": (
        "query($id: ID!) { member(id: $id) { identifiers { masked } } }",
        lambda ids: {"id": ids["member_a"]},
    ),
}


OPERATIONS: dict[str, tuple[str, Any]] = {
    "createMerchant": (
        'mutation { createMerchant(input: {code: "new", name: "New"}) { merchant { id } '
        "userErrors { code } } }",
        lambda ids: None,
    ),
    "createProgram(A)": (
        """mutation($m: ID!) { createProgram(input: {merchantId: $m, code: "p2", name: "P2",
        unitName: "pt", pointValue: "0.01"}) { program { id } userErrors { code } } }""",
        lambda ids: {"m": ids["merchant_a"]},
    ),
    "enrollMember(A)": (
        """mutation($p: ID!) { enrollMember(input: {programId: $p, memberNumber: "n1"}) {
        membership { id } userErrors { code } } }""",
        lambda ids: {"p": ids["program_a"]},
    ),
    "enrollMember(B)": (
        """mutation($p: ID!) { enrollMember(input: {programId: $p, memberNumber: "n1"}) {
        membership { id } userErrors { code } } }""",
        lambda ids: {"p": ids["program_b"]},
    ),
    "awardPoints(A)": _move("awardPoints", "membership_a"),
    "awardPoints(B)": _move("awardPoints", "membership_b"),
    "spendPoints(A)": _move("spendPoints", "membership_a"),
    "spendPoints(B)": _move("spendPoints", "membership_b"),
    "createEarningRule(A)": (
        """mutation($p: ID!) { createEarningRule(input: {programId: $p, code: "r", kind: PURCHASE,
        name: "r", terms: {pointsPerUnit: "1"}}) { rule { id } userErrors { code } } }""",
        lambda ids: {"p": ids["program_a"]},
    ),
    "createEarningRule(B)": (
        """mutation($p: ID!) { createEarningRule(input: {programId: $p, code: "r", kind: PURCHASE,
        name: "r", terms: {pointsPerUnit: "1"}}) { rule { id } userErrors { code } } }""",
        lambda ids: {"p": ids["program_b"]},
    ),
    "recordPurchase(A)": (
        """mutation($m: ID!, $o: String!) { recordPurchase(input: {membershipId: $m,
        orderId: $o, amount: "10"}) { breakdown { points } userErrors { code } } }""",
        lambda ids: {"m": ids["membership_a"], "o": f"o{next(_keys)}"},
    ),
    "recordPurchase(B)": (
        """mutation($m: ID!, $o: String!) { recordPurchase(input: {membershipId: $m,
        orderId: $o, amount: "10"}) { breakdown { points } userErrors { code } } }""",
        lambda ids: {"m": ids["membership_b"], "o": f"o{next(_keys)}"},
    ),
    "previewEarn(A)": (
        """query($m: ID!) { previewEarn(input: {membershipId: $m, amount: "10"}) { points } }""",
        lambda ids: {"m": ids["membership_a"]},
    ),
    **{
        f"recordAction({side})": (
            """mutation($m: ID!, $k: String!) { recordAction(input: {membershipId: $m,
            action: SHARE, idempotencyKey: $k}) { earned { replayed } userErrors { code } } }""",
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"], "k": f"a{next(_keys)}"},
        )
        for side in "AB"
    },
    **{
        f"reversePurchase({side})": (
            """mutation($r: String!) { reversePurchase(input: {orderId: "order", refundId: $r,
            amount: "1"}) { reversal { clawback } userErrors { code } } }""",
            lambda ids: {"r": f"r{next(_keys)}"},
        )
        for side in "A"
    },
    **{
        f"setEarningPolicy({side})": (
            """mutation($p: ID!) { setEarningPolicy(input: {programId: $p,
            caps: [{period: DAY, points: 100}], clawbackPolicy: WRITE_OFF}) {
            program { id } userErrors { code } } }""",
            lambda ids, side=side: {"p": ids[f"program_{side.lower()}"]},
        )
        for side in "AB"
    },
    **{
        f"setMemberSegments({side})": (
            """mutation($m: ID!) { setMemberSegments(input: {membershipId: $m,
            segments: ["students"]}) { membership { segments } userErrors { code } } }""",
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"]},
        )
        for side in "AB"
    },
    **{
        f"authorizeDiscount({side})": (
            """mutation($m: ID!, $k: String!) { authorizeDiscount(input: {membershipId: $m,
            points: 5, billAmount: "10", idempotencyKey: $k}) { hold { id }
            userErrors { code } } }""",
            lambda ids, side=side: {"m": ids[f"membership_{side.lower()}"], "k": f"d{next(_keys)}"},
        )
        for side in "AB"
    },
    "captureDiscount(A)": (
        """mutation($h: ID!) { captureDiscount(input: {holdId: $h}) { hold { status }
        userErrors { code } } }""",
        lambda ids: {"h": ids["hold_a"]},
    ),
    "voidDiscount(A)": (
        """mutation($h: ID!) { voidDiscount(input: {holdId: $h}) { hold { status }
        userErrors { code } } }""",
        lambda ids: {"h": ids["hold_a"]},
    ),
    **{
        f"setDiscountPolicy({side})": (
            """mutation($p: ID!) { setDiscountPolicy(input: {programId: $p, maxShare: "0.5"}) {
            program { id } userErrors { code } } }""",
            lambda ids, side=side: {"p": ids[f"program_{side.lower()}"]},
        )
        for side in "AB"
    },
    "refundDiscount(A)": (
        """mutation($h: ID!) { refundDiscount(input: {holdId: $h, points: 1, refundId: "r"}) {
        replayed userErrors { code } } }""",
        lambda ids: {"h": ids["hold_a"]},
    ),
    "read hold(A)": (
        "query($id: ID!) { node(id: $id) { ... on Hold { points status } } }",
        lambda ids: {"id": ids["hold_a"]},
    ),
    "read merchants": ("{ merchants { edges { node { id } } } }", lambda ids: None),
    "read programs": ("{ programs { edges { node { id } } } }", lambda ids: None),
    "read membership(A)": (
        "query($id: ID!) { membership(id: $id) { balance { points } } }",
        lambda ids: {"id": ids["membership_a"]},
    ),
    "read membership(B)": (
        "query($id: ID!) { membership(id: $id) { balance { points } } }",
        lambda ids: {"id": ids["membership_b"]},
    ),
    "read membership(A) lots": (
        "query($id: ID!) { membership(id: $id) { pointsExpiring(withinDays: 3650)"
        " lots { edges { node { remaining } } } } }",
        lambda ids: {"id": ids["membership_a"]},
    ),
    "read member(A) history": (
        "query($id: ID!) { member(id: $id) { transactions { edges { node { points } } } } }",
        lambda ids: {"id": ids["member_a"]},
    ),
    "read member(B)": (
        "query($id: ID!) { member(id: $id) { id } }",
        lambda ids: {"id": ids["member_b"]},
    ),
    "members of program(A)": (
        "query($id: ID!) { node(id: $id) { ... on Program {"
        " memberships { edges { node { id } } } } } }",
        lambda ids: {"id": ids["program_a"]},
    ),
    "setTierLadder(A)": _set_ladder("program_a"),
    "setTierLadder(B)": _set_ladder("program_b"),
    "read tiers(A)": (
        "query($id: ID!) { node(id: $id) { ... on Program {"
        " tierPolicy { basis } tiers { edges { node { code multiplier } } } } } }",
        lambda ids: {"id": ids["program_a"]},
    ),
    "read membership(A) tier": _read_tier("membership_a"),
    "read membership(B) tier": _read_tier("membership_b"),
    "outstandingPoints(A)": (
        "query($id: ID!) { node(id: $id) { ... on Program { outstandingPoints } } }",
        lambda ids: {"id": ids["program_a"]},
    ),
    "outstandingPoints(B)": (
        "query($id: ID!) { node(id: $id) { ... on Program { outstandingPoints } } }",
        lambda ids: {"id": ids["program_b"]},
    ),
    **IDENTITY_OPERATIONS,
}

F, N, H = "FORBIDDEN", "NOT_FOUND", "hidden"
# Columns in ROLES order: operator, auditor, finance_wide, finance_a, merchant_a, member_a.
EXPECTED: dict[str, tuple[str, ...]] = {
    "createMerchant":         ("ok", F, F, F, F, F),
    "createProgram(A)":       ("ok", F, F, F, F, F),
    "enrollMember(A)":        (F, F, F, F, "ok", F),
    "enrollMember(B)":        (F, F, F, F, N, F),
    "awardPoints(A)":         (F, F, F, F, "ok", F),
    "awardPoints(B)":         (F, F, F, F, N, F),
    "spendPoints(A)":         (F, F, F, F, "ok", "ok"),
    "spendPoints(B)":         (F, F, F, F, N, N),
    "createEarningRule(A)":   (F, F, F, F, "ok", F),
    "createEarningRule(B)":   (F, F, F, F, N, F),
    "recordPurchase(A)":      (F, F, F, F, "ok", F),
    "recordPurchase(B)":      (F, F, F, F, N, F),
    "previewEarn(A)":         (F, F, F, F, "ok", F),
    "recordAction(A)":        (F, F, F, F, "ok", F),
    "recordAction(B)":        (F, F, F, F, N, F),
    "reversePurchase(A)":     (F, F, F, F, "ok", F),
    "setEarningPolicy(A)":    (F, F, F, F, "ok", F),
    "setEarningPolicy(B)":    (F, F, F, F, N, F),
    "setMemberSegments(A)":   (F, F, F, F, "ok", F),
    "setMemberSegments(B)":   (F, F, F, F, N, F),
    "authorizeDiscount(A)":   (F, F, F, F, "ok", "ok"),
    "authorizeDiscount(B)":   (F, F, F, F, N, N),
    "captureDiscount(A)":     (F, F, F, F, "ok", F),
    "voidDiscount(A)":        (F, F, F, F, "ok", "ok"),
    "setDiscountPolicy(A)":   (F, F, F, F, "ok", F),
    "setDiscountPolicy(B)":   (F, F, F, F, N, F),
    # The world's hold is authorized, not captured: the merchant is let in, then refused.
    "refundDiscount(A)":      (F, F, F, F, "INACTIVE", F),
    "read hold(A)":           ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read merchants":         ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read programs":          ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read membership(A)":     ("ok", "ok", H, H, "ok", "ok"),
    "read membership(B)":     ("ok", "ok", H, H, H, H),
    "read membership(A) lots": ("ok", "ok", H, H, "ok", "ok"),
    "read member(A) history": ("ok", "ok", H, H, "ok", "ok"),
    "read member(B)":         ("ok", "ok", H, H, H, H),
    "members of program(A)":  ("ok", "ok", H, H, "ok", "ok"),
    "setTierLadder(A)":       (F, F, F, F, "ok", F),
    "setTierLadder(B)":       (F, F, F, F, N, F),
    "read tiers(A)":          ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read membership(A) tier": ("ok", "ok", H, H, "ok", "ok"),
    "read membership(B) tier": ("ok", "ok", H, H, H, H),
    "outstandingPoints(A)":   ("ok", "ok", "ok", "ok", "ok", F),
    "outstandingPoints(B)":   ("ok", "ok", "ok", H, H, F),
    # Identity federation. A verification is its starter's: others cannot tell it exists.
    "startVerification(A)":   (F, F, F, F, "ok", "ok"),
    "startVerification(B)":   (F, F, F, F, N, N),
    "confirmVerification(A)": (F, F, F, F, "ok", "VERIFICATION_FAILED"),
    "grantConsent(A)":        (F, F, F, F, F, "ok"),
    "withdrawConsent(A)":     (F, F, F, F, F, "ok"),
    "read consents(A)":       ("ok", "ok", F, F, "ok", "ok"),
    "read consents(B)":       (H, H, F, F, H, H),
    "allianceBalances(A)":    ("ok", "ok", F, F, "ok", "ok"),
    "allianceBalances(B)":    ("ok", "ok", F, F, H, H),
    "mergeMembers":           ("ok", F, F, F, F, F),
    "unlinkMembership(A)":    ("ok", F, F, F, "ok", "ok"),
    # B's member has no other membership: nothing to unlink from.
    "unlinkMembership(B)":    ("INVALID_INPUT", F, F, F, N, N),
    "unlinkMembership(A_at_B)": ("ok", F, F, F, N, N),
    "exportMyData(A)":        ("ok", F, F, F, F, "ok"),
    "exportMyData(B)":        ("ok", F, F, F, F, N),
    "eraseMember(A)":         ("ok", F, F, F, F, "ok"),
    "eraseMember(B)":         ("ok", F, F, F, F, N),
    "setPrivacyPolicy":       ("ok", F, F, F, F, F),
    "read privacyPolicy":     ("ok", "ok", F, F, F, F),
    "read member(A) identifiers": ("ok", "ok", H, H, "ok", "ok"),
}  # fmt: skip


CASES = [
    pytest.param(operation, role, expected, id=f"{operation}-{role}")
    for operation, row in EXPECTED.items()
    for role, expected in zip(ROLES, row, strict=True)
]


def test_matrix_covers_every_operation_and_role() -> None:
    assert set(EXPECTED) == set(OPERATIONS)
    assert all(len(row) == len(ROLES) for row in EXPECTED.values())


@pytest.mark.parametrize(("operation", "role", "expected"), CASES)
async def test_authorization(
    db: Database, world: World, operation: str, role: str, expected: str
) -> None:
    query, variables = OPERATIONS[operation]
    result = await run(db, world.actors[role], query, variables(world.ids))
    assert outcome(result) == expected, result
