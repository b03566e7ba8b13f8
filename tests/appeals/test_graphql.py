"""Appeals through GraphQL: the member's side, the merchant's side, batched threads."""

from __future__ import annotations

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from tests.factories import give_points, make_membership, make_program, member_actor
from tests.graphql.helpers import gid, ok

LIST = """{ appeals { edges { node { id status text reason entry { points kind }
  messages { edges { node { authorRole body } } } adjustment { status points } } } } }"""


def staff(merchant_id: int, name: str) -> Actor:
    client = f"staff-{name}-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


async def test_both_sides_follow_one_appeal(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    earned = await give_points(db, membership, program, 80)
    member = member_actor(membership, program.merchant_id)
    opened = await ok(
        db, member,
        "mutation($e: ID!) { openAppeal(input: {entryId: $e, reason: MISSING_POINTS,"
        " text: \"receipt 8812 was 180 yuan\"}) { appeal { id status respondBy resolveBy }"
        " userErrors { code } } }",
        {"e": gid("LedgerEntry", earned.entry_id)},
    )  # fmt: skip
    appeal = opened["openAppeal"]["appeal"]
    assert appeal["status"] == "OPEN"
    helper = staff(program.merchant_id, "a")
    replied = await ok(
        db, helper,
        "mutation($a: ID!) { postAppealMessage(input: {appealId: $a, text: \"found it\"}) {"
        " appeal { status firstResponseAt } userErrors { code } } }",
        {"a": appeal["id"]},
    )  # fmt: skip
    assert replied["postAppealMessage"]["appeal"]["status"] == "IN_REVIEW"
    resolved = await ok(
        db, helper,
        "mutation($a: ID!) { resolveAppeal(input: {appealId: $a, direction: CREDIT,"
        " points: 100, note: \"180 yuan earns 180\", idempotencyKey: \"ap-1\"}) {"
        " appeal { status } adjustment { status reasonCode } userErrors { code } } }",
        {"a": appeal["id"]},
    )  # fmt: skip
    assert resolved["resolveAppeal"]["appeal"]["status"] == "IN_REVIEW"
    assert resolved["resolveAppeal"]["adjustment"] == {"status": "PENDING", "reasonCode": "APPEAL"}
    for reader in (member, helper):
        (node,) = [e["node"] for e in (await ok(db, reader, LIST))["appeals"]["edges"]]
        assert node["entry"] == {"points": 80, "kind": "AWARD"}
        assert [m["node"]["body"] for m in node["messages"]["edges"]] == [
            "receipt 8812 was 180 yuan",
            "found it",
        ]
    # The member sees the proposal's state only through the appeal; the adjustment
    # itself is staff business.
    (mine,) = [e["node"] for e in (await ok(db, member, LIST))["appeals"]["edges"]]
    assert mine["adjustment"] is None


async def test_a_page_of_appeals_with_threads_costs_constant_statements(db: Database) -> None:
    program = await make_program(db)
    helper = staff(program.merchant_id, "a")
    for n in range(4):
        membership = await make_membership(db, program)
        earned = await give_points(db, membership, program, 10 + n)
        await ok(
            db, member_actor(membership, program.merchant_id),
            "mutation($e: ID!) { openAppeal(input: {entryId: $e, reason: OTHER, text: \"?\"}) {"
            " userErrors { code } } }",
            {"e": gid("LedgerEntry", earned.entry_id)},
        )  # fmt: skip
    with db.count_statements() as counter:
        data = await ok(db, helper, LIST)
    assert len(data["appeals"]["edges"]) == 4
    # appeals, entries, threads (adjustments: none to load)
    assert counter.count == 3
