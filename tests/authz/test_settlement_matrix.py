"""Exchange and settlement operations: every role, including what each must not do.

Merchants A and B; member a holds a membership in each program (linked identity). The
world has exchanged and spent at the partner, and one closed period whose statement
for A is issued and for B still a draft. Outcomes as in test_matrix.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.exchange.service import exchange_points, redeem_at_partner, set_partner_acceptance
from alliance.settlement.service import issue_statement
from tests.authz.outcomes import outcome
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import (
    ALLIANCE_FINANCE,
    AUDITOR,
    OPERATOR,
    finance_actor,
    merchant_actor,
)
from tests.graphql.helpers import gid, run
from tests.settlement.helpers import settle

ROLES = ("operator", "auditor", "finance_wide", "finance_a", "merchant_a", "member_a")


@dataclass
class World:
    actors: dict[str, Actor]
    ids: dict[str, str]


@pytest.fixture
async def world(db: Database, monkeypatch: pytest.MonkeyPatch) -> World:
    a = await make_alliance(db, ("0.01", "0.02"))
    program_a, program_b = a.programs
    await rate(db, program_a, program_b, "1/2")
    await rate(db, program_b, program_a, "2")
    await set_partner_acceptance(
        db, merchant_actor(program_b.merchant_id), program_id=program_a.id, accepts=True
    )
    done = await exchange_points(
        db,
        a.member,
        from_membership_id=a.memberships[0].id,
        to_membership_id=a.memberships[1].id,
        points=100,
        idempotency_key=next(keys),
    )
    await redeem_at_partner(
        db,
        a.member,
        membership_id=a.memberships[0].id,
        merchant_id=program_b.merchant_id,
        points=10,
        reference="bill",
        idempotency_key=next(keys),
    )
    (period,) = [p for p in await settle(db, monkeypatch) if p.obligations]
    statements: dict[int, int] = dict(
        await db.fetch_all(
            "SELECT merchant_id, id FROM settlement_statement WHERE period_id = %(p)s",
            {"p": period.id},
        )
    )
    await issue_statement(db, OPERATOR, statement_id=statements[program_a.merchant_id])
    merchant_a = await _merchant(db, program_a.merchant_id)
    return World(
        actors={
            "operator": OPERATOR,
            "auditor": AUDITOR,
            "finance_wide": ALLIANCE_FINANCE,
            "finance_a": finance_actor(merchant_a),
            "merchant_a": merchant_actor(program_a.merchant_id),
            "member_a": a.member,
        },
        ids={
            "program_a": gid("Program", program_a.id),
            "program_b": gid("Program", program_b.id),
            "merchant_b": gid("Merchant", program_b.merchant_id),
            "membership_a": gid("Membership", a.memberships[0].id),
            "membership_a_at_b": gid("Membership", a.memberships[1].id),
            "exchange": gid("Exchange", done.exchange.id),
            "period": gid("SettlementPeriod", period.id),
            "statement_a": gid("SettlementStatement", statements[program_a.merchant_id]),
            "statement_b": gid("SettlementStatement", statements[program_b.merchant_id]),
        },
    )


async def _merchant(db: Database, merchant_id: int) -> Any:
    from alliance.programs.queries import merchants_by_id

    return (await merchants_by_id(db, OPERATOR, [merchant_id]))[merchant_id]


def _step(name: str, statement: str, extra: str = "") -> tuple[str, Any]:
    return (
        f"mutation($s: ID!) {{ {name}(input: {{statementId: $s{extra}}}) {{"
        " statement { status } userErrors { code } } }",
        lambda ids: {"s": ids[statement]},
    )


OPERATIONS: dict[str, tuple[str, Any]] = {
    "publishExchangeRate": (
        """mutation($a: ID!, $b: ID!) { publishExchangeRate(input: {fromProgramId: $a,
        toProgramId: $b, rate: "1/3"}) { rate { rate } userErrors { code } } }""",
        lambda ids: {"a": ids["program_a"], "b": ids["program_b"]},
    ),
    "withdrawExchangeRate": (
        """mutation($a: ID!, $b: ID!) { withdrawExchangeRate(input: {fromProgramId: $a,
        toProgramId: $b}) { rate { withdrawn } userErrors { code } } }""",
        lambda ids: {"a": ids["program_a"], "b": ids["program_b"]},
    ),
    "setExchangeOptOut(A)": (
        """mutation($a: ID!, $b: ID!) { setExchangeOptOut(input: {fromProgramId: $b,
        toProgramId: $a, optedOut: true}) { optedOut userErrors { code } } }""",
        lambda ids: {"a": ids["program_a"], "b": ids["program_b"]},
    ),
    "exchangeQuote": (
        """mutation($f: ID!, $t: ID!) { exchangeQuote(input: {fromMembershipId: $f,
        toMembershipId: $t, points: 10}) { quote { pointsOut } userErrors { code } } }""",
        lambda ids: {"f": ids["membership_a"], "t": ids["membership_a_at_b"]},
    ),
    "exchangePoints": (
        """mutation($f: ID!, $t: ID!) { exchangePoints(input: {fromMembershipId: $f,
        toMembershipId: $t, points: 10, idempotencyKey: "m"}) { exchange { pointsOut }
        userErrors { code } } }""",
        lambda ids: {"f": ids["membership_a"], "t": ids["membership_a_at_b"]},
    ),
    "setPartnerAcceptance(B's points at A)": (
        """mutation($b: ID!) { setPartnerAcceptance(input: {programId: $b, accepts: true}) {
        accepts userErrors { code } } }""",
        lambda ids: {"b": ids["program_b"]},
    ),
    "redeemAtPartner": (
        """mutation($m: ID!, $x: ID!) { redeemAtPartner(input: {membershipId: $m,
        merchantId: $x, points: 5, reference: "r", idempotencyKey: "p"}) { value
        userErrors { code } } }""",
        lambda ids: {"m": ids["membership_a"], "x": ids["merchant_b"]},
    ),
    "read exchangeRates": ("{ exchangeRates { edges { node { rate } } } }", lambda ids: None),
    "read myExchanges": ("{ myExchanges { edges { node { pointsOut } } } }", lambda ids: None),
    "read exchange": (
        "query($id: ID!) { node(id: $id) { ... on Exchange { pointsIn pointsOut } } }",
        lambda ids: {"id": ids["exchange"]},
    ),
    "runSettlement": (
        "mutation { runSettlement(input: {}) { periods { id } userErrors { code } } }",
        lambda ids: None,
    ),
    "setSettlementCadence": (
        "mutation { setSettlementCadence(input: {cadence: WEEKLY}) { cadence"
        " userErrors { code } } }",
        lambda ids: None,
    ),
    "issueStatement(B)": _step("issueStatement", "statement_b"),
    "confirmStatement(A)": _step("confirmStatement", "statement_a"),
    "disputeStatement(A)": _step("disputeStatement", "statement_a", ', reason: "no"'),
    "reissueStatement(A)": _step("reissueStatement", "statement_a", ', note: "fixed"'),
    "markStatementPaid(A)": _step(
        "markStatementPaid", "statement_a", ', paymentReference: "wire 1"'
    ),
    "read statement(A)": (
        "query($id: ID!) { node(id: $id) { ... on SettlementStatement { net"
        " lines { edges { node { kind amount } } } } } }",
        lambda ids: {"id": ids["statement_a"]},
    ),
    "read statement(B)": (
        "query($id: ID!) { node(id: $id) { ... on SettlementStatement { net } } }",
        lambda ids: {"id": ids["statement_b"]},
    ),
    "read settlementStatements": (
        "{ settlementStatements { edges { node { net } } } }",
        lambda ids: None,
    ),
    "liabilityReport": (
        """{ liabilityReport(at: "2100-01-01T00:00:00Z") { edges { node { liability } } } }""",
        lambda ids: None,
    ),
    "reconciliation": (
        "query($p: ID!) { reconciliation(periodId: $p) { matches } }",
        lambda ids: {"p": ids["period"]},
    ),
}

F, N, H, X = "FORBIDDEN", "NOT_FOUND", "hidden", "INVALID_TRANSITION"
# Columns in ROLES order: operator, auditor, finance_wide, finance_a, merchant_a, member_a.
EXPECTED: dict[str, tuple[str, ...]] = {
    "publishExchangeRate":    ("ok", F, F, F, F, F),
    "withdrawExchangeRate":   ("ok", F, F, F, F, F),
    "setExchangeOptOut(A)":   (F, F, F, F, "ok", F),
    "exchangeQuote":          (F, F, F, F, F, "ok"),
    "exchangePoints":         (F, F, F, F, F, "ok"),
    "setPartnerAcceptance(B's points at A)": (F, F, F, F, "ok", F),
    "redeemAtPartner":        (F, F, F, F, F, "ok"),
    "read exchangeRates":     ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read myExchanges":       (H, H, H, H, H, "ok"),
    "read exchange":          ("ok", "ok", "ok", "ok", "ok", "ok"),
    "runSettlement":          ("ok", F, "ok", F, F, F),
    "setSettlementCadence":   ("ok", F, "ok", F, F, F),
    "issueStatement(B)":      ("ok", F, "ok", F, F, F),
    "confirmStatement(A)":    (F, F, F, "ok", F, F),
    "disputeStatement(A)":    (F, F, F, "ok", F, F),
    "reissueStatement(A)":    (X, F, X, F, F, F),
    "markStatementPaid(A)":   (X, F, X, F, F, F),
    "read statement(A)":      ("ok", "ok", "ok", "ok", "ok", H),
    "read statement(B)":      ("ok", "ok", "ok", H, H, H),
    "read settlementStatements": ("ok", "ok", "ok", "ok", "ok", H),
    "liabilityReport":        ("ok", "ok", "ok", "ok", "ok", F),
    "reconciliation":         ("ok", "ok", "ok", "ok", F, F),
}  # fmt: skip


def test_matrix_covers_every_operation_and_role() -> None:
    assert set(EXPECTED) == set(OPERATIONS)
    assert all(len(row) == len(ROLES) for row in EXPECTED.values())


@pytest.mark.parametrize(
    ("operation", "role", "expected"),
    [
        pytest.param(op, role, want, id=f"{op}-{role}")
        for op, row in EXPECTED.items()
        for role, want in zip(ROLES, row, strict=True)
    ],
)
async def test_authorization(
    db: Database, world: World, operation: str, role: str, expected: str
) -> None:
    query, variables = OPERATIONS[operation]
    result = await run(db, world.actors[role], query, variables(world.ids))
    assert outcome(result) == expected, result
