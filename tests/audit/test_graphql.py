"""The audit trail and adjustments through GraphQL: filters, paging, a maker-checker flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from tests.factories import AUDITOR, OPERATOR, give_points, make_membership, make_program
from tests.graphql.helpers import gid, ok, run

RECORDS = """query($actor: String, $target: String, $action: String, $since: DateTime,
  $until: DateTime, $first: Int = 20, $after: String) {
  auditRecords(actor: $actor, target: $target, action: $action, since: $since, until: $until,
               first: $first, after: $after) {
    edges { node { id actor role action target before after chainSeq hash previousHash
                   merchant { code } } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def staff(merchant_id: int, name: str) -> Actor:
    client = f"staff-{name}-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


async def test_filters_and_paging(db: Database) -> None:
    program = await make_program(db)
    memberships = [await make_membership(db, program) for _ in range(3)]
    every = await ok(db, AUDITOR, RECORDS)
    actions = [e["node"]["action"] for e in every["auditRecords"]["edges"]]
    assert actions == ["membership.enroll"] * 3 + ["program.create", "merchant.create"]
    newest = every["auditRecords"]["edges"][0]["node"]
    assert newest["chainSeq"] == 5
    assert newest["previousHash"] == every["auditRecords"]["edges"][1]["node"]["hash"]

    by_action = await ok(db, OPERATOR, RECORDS, {"action": "program.create"})
    (node,) = [e["node"] for e in by_action["auditRecords"]["edges"]]
    assert node["actor"] == OPERATOR.subject
    assert node["merchant"] is not None
    by_target = await ok(db, AUDITOR, RECORDS, {"target": f"membership:{memberships[1].id}"})
    assert [e["node"]["after"]["member_number"] for e in by_target["auditRecords"]["edges"]] == [
        memberships[1].member_number
    ]
    by_actor = await ok(
        db, AUDITOR, RECORDS, {"actor": f"client:test-merchant-{program.merchant_id}"}
    )
    assert len(by_actor["auditRecords"]["edges"]) == 3

    now = datetime.now(UTC)
    later = await ok(db, AUDITOR, RECORDS, {"since": (now + timedelta(hours=1)).isoformat()})
    assert later["auditRecords"]["edges"] == []
    window = {"since": (now - timedelta(hours=1)).isoformat(), "until": now.isoformat()}
    assert len((await ok(db, AUDITOR, RECORDS, window))["auditRecords"]["edges"]) == 5
    backwards = await run(db, AUDITOR, RECORDS, {**window, "until": window["since"]})
    assert backwards["errors"][0]["extensions"]["code"] == "INVALID_INPUT"

    first = await ok(db, AUDITOR, RECORDS, {"first": 2})
    assert first["auditRecords"]["pageInfo"]["hasNextPage"]
    rest = await ok(
        db, AUDITOR, RECORDS, {"first": 10, "after": first["auditRecords"]["pageInfo"]["endCursor"]}
    )
    assert [e["node"]["action"] for e in rest["auditRecords"]["edges"]] == actions[2:]


async def test_one_statement_per_page_and_one_for_its_merchants(db: Database) -> None:
    for _ in range(3):
        await make_program(db)
    with db.count_statements() as counter:
        data = await ok(db, AUDITOR, RECORDS)
    assert len(data["auditRecords"]["edges"]) == 6
    assert counter.count == 2


async def test_maker_checker_flow(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 100)
    maker, checker = staff(program.merchant_id, "a"), staff(program.merchant_id, "b")
    policy = await ok(
        db, maker,
        "mutation($p: ID!) { setAdjustmentPolicy(input: {programId: $p, approvalThreshold: 50})"
        " { approvalThreshold userErrors { code } } }",
        {"p": gid("Program", program.id)},
    )  # fmt: skip
    assert policy["setAdjustmentPolicy"] == {"approvalThreshold": 50, "userErrors": []}
    request = """mutation($m: ID!, $points: BigInt!, $key: String!) {
      requestAdjustment(input: {membershipId: $m, direction: DEBIT, points: $points,
        reasonCode: FRAUD, note: "duplicate earn from POS 7", idempotencyKey: $key}) {
        adjustment { id status needsApproval membership { balance { points } } }
        replayed userErrors { code field }
      }
    }"""
    m = gid("Membership", membership.id)
    small = await ok(db, maker, request, {"m": m, "points": 10, "key": "a1"})
    assert small["requestAdjustment"]["adjustment"]["status"] == "POSTED"
    assert small["requestAdjustment"]["adjustment"]["membership"]["balance"]["points"] == 90
    big = await ok(db, maker, request, {"m": m, "points": 60, "key": "a2"})
    adjustment = big["requestAdjustment"]["adjustment"]
    assert (adjustment["status"], adjustment["needsApproval"]) == ("PENDING", True)
    too_much = await ok(db, maker, request, {"m": m, "points": 10**10, "key": "a3"})
    assert too_much["requestAdjustment"]["userErrors"] == [
        {"code": "INVALID_INPUT", "field": ["input", "points"]}
    ]

    approve = """mutation($a: ID!) { approveAdjustment(input: {adjustmentId: $a}) {
      adjustment { status decidedBy transactionId membership { balance { points } } }
      userErrors { code } } }"""
    own = await ok(db, maker, approve, {"a": adjustment["id"]})
    assert own["approveAdjustment"]["userErrors"] == [{"code": "SELF_APPROVAL"}]
    done = await ok(db, checker, approve, {"a": adjustment["id"]})
    posted = done["approveAdjustment"]["adjustment"]
    assert (posted["status"], posted["decidedBy"]) == ("POSTED", checker.subject)
    assert posted["membership"]["balance"]["points"] == 30
    bogus = await ok(db, checker, approve, {"a": gid("Program", program.id)})
    assert bogus["approveAdjustment"]["userErrors"] == [{"code": "NOT_FOUND"}]

    history = await ok(
        db, checker,
        "query($m: ID!) { node(id: $m) { ... on Membership { transactions(first: 5) {"
        " edges { node { kind points } } } } } }",
        {"m": m},
    )  # fmt: skip
    entries = [e["node"] for e in history["node"]["transactions"]["edges"]]
    assert entries[:2] == [
        {"kind": "ADJUSTMENT", "points": -60},
        {"kind": "ADJUSTMENT", "points": -10},
    ]
    listed = await ok(
        db, checker, "{ adjustments(status: POSTED) { edges { node { points requestedBy } } } }"
    )
    assert [e["node"]["points"] for e in listed["adjustments"]["edges"]] == [60, 10]
    trail = await ok(db, AUDITOR, RECORDS, {"action": "adjustment.approve"})
    (record,) = [e["node"] for e in trail["auditRecords"]["edges"]]
    assert record["actor"] == checker.subject
    assert record["before"] == {"status": "pending", "requested_by": maker.subject}
    assert record["after"]["status"] == "posted"
