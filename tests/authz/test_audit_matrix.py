"""Audit, adjustments, appeals and webhooks: every role, including what each must not do.

Merchants A and B; A has two staff identities (two OAuth clients: merchant_a made the
pending requests, merchant_a2 did not) and member a. Outcomes as in test_matrix.py:
"ok", an error code, or "hidden" (null or an empty list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from alliance.adjustments.models import AdjustmentDirection, AdjustmentReason
from alliance.adjustments.service import request_adjustment
from alliance.appeals.models import AppealReason
from alliance.appeals.service import open_appeal
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.events.dispatcher import dispatch_due
from alliance.events.webhooks import register_endpoint
from alliance.programs.queries import merchants_by_id
from tests.authz.outcomes import outcome
from tests.factories import (
    ALLIANCE_FINANCE,
    AUDITOR,
    OPERATOR,
    finance_actor,
    give_points,
    make_membership,
    make_program,
    member_actor,
)
from tests.graphql.helpers import gid, run

ROLES = (
    "operator", "auditor", "finance_wide", "finance_a", "merchant_a", "merchant_a2",
    "merchant_b", "member_a",
)  # fmt: skip


@dataclass
class World:
    actors: dict[str, Actor]
    ids: dict[str, str]


def _staff(merchant_id: int, name: str) -> Actor:
    client = f"staff-{name}-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


@pytest.fixture
async def world(db: Database) -> World:
    program_a, program_b = await make_program(db), await make_program(db)
    membership = await make_membership(db, program_a)
    earned = await give_points(db, membership, program_a, 100)
    spent = await give_points(db, membership, program_a, 7)
    member = member_actor(membership, program_a.merchant_id)
    appeal = await open_appeal(
        db, member, entry_id=earned.entry_id, reason=AppealReason.MISSING_POINTS, body="where?"
    )
    maker = _staff(program_a.merchant_id, "a")
    pending = [
        await request_adjustment(
            db,
            maker,
            membership_id=membership.id,
            direction=AdjustmentDirection.CREDIT,
            points=10,
            reason_code=AdjustmentReason.GOODWILL,
            note="sorry",
            idempotency_key=f"world-{n}",
        )
        for n in range(2)
    ]
    hook = await register_endpoint(
        db, maker, url="http://127.0.0.1:9/nobody-listens", event_types=["points.earned"]
    )
    await dispatch_due(db, max_attempts=1)  # refused connections: dead at once
    (delivery_id,) = (await db.fetch_all("SELECT min(id) FROM webhook_delivery"))[0]
    record = await db.fetch_one(
        "SELECT id FROM audit_record WHERE merchant_id = %(m)s ORDER BY id LIMIT 1",
        {"m": program_a.merchant_id},
    )
    assert record is not None
    merchant_a = program_a.merchant_id
    merchant_record = (await merchants_by_id(db, OPERATOR, [merchant_a]))[merchant_a]
    return World(
        actors={
            "operator": OPERATOR,
            "auditor": AUDITOR,
            "finance_wide": ALLIANCE_FINANCE,
            "finance_a": finance_actor(merchant_record),
            "merchant_a": maker,
            "merchant_a2": _staff(program_a.merchant_id, "b"),
            "merchant_b": _staff(program_b.merchant_id, "x"),
            "member_a": member,
        },
        ids={
            "program_a": gid("Program", program_a.id),
            "membership_a": gid("Membership", membership.id),
            "pending_1": gid("Adjustment", pending[0].id),
            "pending_2": gid("Adjustment", pending[1].id),
            "record_a": gid("AuditRecord", record[0]),
            "appeal_a": gid("Appeal", appeal.id),
            "endpoint_a": gid("WebhookEndpoint", hook.endpoint.id),
            "delivery_a": gid("WebhookDelivery", delivery_id),
            "entry_a": gid("LedgerEntry", spent.entry_id),
        },
    )


OPERATIONS: dict[str, tuple[str, Any]] = {
    "read auditRecords": (
        "{ auditRecords(first: 5) { edges { node { action hash } } } }",
        lambda ids: None,
    ),
    "read auditRecord(A)": (
        "query($id: ID!) { node(id: $id) { ... on AuditRecord { action chainSeq } } }",
        lambda ids: {"id": ids["record_a"]},
    ),
    "setAdjustmentPolicy(A)": (
        """mutation($p: ID!) { setAdjustmentPolicy(input: {programId: $p,
        approvalThreshold: 500}) { approvalThreshold userErrors { code } } }""",
        lambda ids: {"p": ids["program_a"]},
    ),
    "requestAdjustment(A)": (
        """mutation($m: ID!) { requestAdjustment(input: {membershipId: $m, direction: CREDIT,
        points: 5, reasonCode: GOODWILL, note: "n", idempotencyKey: "k"}) {
        adjustment { status } userErrors { code } } }""",
        lambda ids: {"m": ids["membership_a"]},
    ),
    "approveAdjustment(A's, by merchant_a)": (
        """mutation($a: ID!) { approveAdjustment(input: {adjustmentId: $a}) {
        adjustment { status } userErrors { code } } }""",
        lambda ids: {"a": ids["pending_1"]},
    ),
    "rejectAdjustment(A's, by merchant_a)": (
        """mutation($a: ID!) { rejectAdjustment(input: {adjustmentId: $a, reason: "no"}) {
        adjustment { status } userErrors { code } } }""",
        lambda ids: {"a": ids["pending_2"]},
    ),
    "read adjustments": (
        "{ adjustments { edges { node { status points } } } }",
        lambda ids: None,
    ),
    "read adjustment(A)": (
        "query($id: ID!) { node(id: $id) { ... on Adjustment { status requestedBy } } }",
        lambda ids: {"id": ids["pending_1"]},
    ),
    "openAppeal(own entry)": (
        """mutation($e: ID!) { openAppeal(input: {entryId: $e, reason: WRONG_AMOUNT,
        text: "t"}) { appeal { status } userErrors { code } } }""",
        lambda ids: {"e": ids["entry_a"]},
    ),
    "postAppealMessage(A)": (
        """mutation($a: ID!) { postAppealMessage(input: {appealId: $a, text: "t"}) {
        appeal { status } userErrors { code } } }""",
        lambda ids: {"a": ids["appeal_a"]},
    ),
    "resolveAppeal(A)": (
        """mutation($a: ID!) { resolveAppeal(input: {appealId: $a, direction: CREDIT,
        points: 5, note: "n", idempotencyKey: "r"}) { appeal { status } userErrors { code } } }""",
        lambda ids: {"a": ids["appeal_a"]},
    ),
    "rejectAppeal(A)": (
        """mutation($a: ID!) { rejectAppeal(input: {appealId: $a, reason: "no"}) {
        appeal { status } userErrors { code } } }""",
        lambda ids: {"a": ids["appeal_a"]},
    ),
    "read appeals": ("{ appeals { edges { node { status text } } } }", lambda ids: None),
    "read appeal(A) with thread": (
        "query($id: ID!) { node(id: $id) { ... on Appeal { status"
        " messages { edges { node { body } } } } } }",
        lambda ids: {"id": ids["appeal_a"]},
    ),
    "appealStatistics": (
        "{ appealStatistics { edges { node { total merchant { code } } } } }",
        lambda ids: None,
    ),
    "registerWebhookEndpoint": (
        """mutation { registerWebhookEndpoint(input: {url: "http://127.0.0.1:9/x",
        eventTypes: ["*"]}) { endpoint { url } userErrors { code } } }""",
        lambda ids: None,
    ),
    "disableWebhookEndpoint(A)": (
        """mutation($e: ID!) { disableWebhookEndpoint(input: {endpointId: $e}) {
        endpoint { status } userErrors { code } } }""",
        lambda ids: {"e": ids["endpoint_a"]},
    ),
    "redeliverWebhook(A)": (
        """mutation($d: ID!) { redeliverWebhook(input: {deliveryId: $d}) {
        delivery { status } userErrors { code } } }""",
        lambda ids: {"d": ids["delivery_a"]},
    ),
    "read webhookEndpoints": (
        "{ webhookEndpoints { edges { node { url eventTypes } } } }",
        lambda ids: None,
    ),
    "read webhookDeliveries": (
        "{ webhookDeliveries { edges { node { status topic } } } }",
        lambda ids: None,
    ),
    "read delivery(A) with attempts": (
        "query($id: ID!) { node(id: $id) { ... on WebhookDelivery { status"
        " attemptLog { edges { node { error } } } } } }",
        lambda ids: {"id": ids["delivery_a"]},
    ),
}

F, N, H, S = "FORBIDDEN", "NOT_FOUND", "hidden", "SELF_APPROVAL"
# Columns in ROLES order: operator, auditor, finance_wide, finance_a, merchant_a (the maker),
# merchant_a2, merchant_b, member_a.
EXPECTED: dict[str, tuple[str, ...]] = {
    "read auditRecords":                     ("ok", "ok", F, "ok", "ok", "ok", "ok", F),
    "read auditRecord(A)":                   ("ok", "ok", H, "ok", "ok", "ok", H, H),
    "setAdjustmentPolicy(A)":                (F, F, F, F, "ok", "ok", N, F),
    "requestAdjustment(A)":                  (F, F, F, F, "ok", "ok", N, F),
    "approveAdjustment(A's, by merchant_a)": (F, F, F, F, S, "ok", N, F),
    "rejectAdjustment(A's, by merchant_a)":  (F, F, F, F, S, "ok", N, F),
    "read adjustments":                      ("ok", "ok", F, F, "ok", "ok", H, F),
    "read adjustment(A)":                    ("ok", "ok", H, H, "ok", "ok", H, H),
    "openAppeal(own entry)":                 (F, F, F, F, F, F, F, "ok"),
    "postAppealMessage(A)":                  (F, F, F, F, "ok", "ok", N, "ok"),
    "resolveAppeal(A)":                      (F, F, F, F, "ok", "ok", N, F),
    "rejectAppeal(A)":                       (F, F, F, F, "ok", "ok", N, F),
    "read appeals":                          ("ok", "ok", F, F, "ok", "ok", H, "ok"),
    "read appeal(A) with thread":            ("ok", "ok", H, H, "ok", "ok", H, "ok"),
    "appealStatistics":                      ("ok", "ok", F, F, F, F, F, F),
    "registerWebhookEndpoint":               (F, F, F, F, "ok", "ok", "ok", F),
    "disableWebhookEndpoint(A)":             (F, F, F, F, "ok", "ok", N, F),
    "redeliverWebhook(A)":                   (F, F, F, F, "ok", "ok", N, F),
    "read webhookEndpoints":                 ("ok", "ok", F, F, "ok", "ok", H, F),
    "read webhookDeliveries":                ("ok", "ok", F, F, "ok", "ok", H, F),
    "read delivery(A) with attempts":        ("ok", "ok", H, H, "ok", "ok", H, H),
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


async def test_merchants_read_only_their_own_records(db: Database, world: World) -> None:
    """Merchant B's staff see B's onboarding, never A's adjustments."""
    result = await run(
        db, world.actors["merchant_b"], "{ auditRecords(first: 100) { edges { node { action"
        " merchant { id } } } } }",
    )  # fmt: skip
    nodes = [e["node"] for e in result["data"]["auditRecords"]["edges"]]
    assert {n["action"] for n in nodes} == {"merchant.create", "program.create"}
    mine = await run(db, world.actors["merchant_a"], "{ auditRecords(first: 100) { edges {"
                     " node { action } } } }")  # fmt: skip
    actions = {e["node"]["action"] for e in mine["data"]["auditRecords"]["edges"]}
    assert {"appeal.open", "adjustment.request", "membership.enroll"} <= actions
    assert len({n["merchant"]["id"] for n in nodes}) == 1
