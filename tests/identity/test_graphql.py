"""The identity flow over GraphQL: typed userErrors for bad input, linking, merging."""

from __future__ import annotations

from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.errors import NotFound
from alliance.identity.models import IdentifierKind
from alliance.members.service import enroll_member
from tests.factories import OPERATOR, give_points, make_membership, make_program, merchant_actor
from tests.graphql.helpers import gid, ok
from tests.identity.helpers import code_for

START = """mutation($input: StartVerificationInput!) { startVerification(input: $input) {
    verification { id kind maskedIdentifier expiresAt } userErrors { code field } } }"""
CONFIRM = """mutation($input: ConfirmVerificationInput!) { confirmVerification(input: $input) {
    membership { id member { id } } merge { pointsMoved accountsFolded membershipsMoved
    survivor { id } } userErrors { code field } } }"""


def _errors(data: dict[str, Any]) -> list[str]:
    (payload,) = data.values()
    return [error["code"] for error in payload["userErrors"]]


async def test_link_two_merchants_by_phone_over_graphql(db: Database) -> None:
    program_a, program_b = await make_program(db), await make_program(db)
    a, b = await make_membership(db, program_a), await make_membership(db, program_b)
    await give_points(db, b, program_b, 25)
    members = []
    for program, membership, phone in ((program_a, a, "+86 138 0013 8000"),
                                       (program_b, b, "138-0013-8000")):  # fmt: skip
        actor = merchant_actor(program.merchant_id)
        started = await ok(db, actor, START, {"input": {
            "membershipId": gid("Membership", membership.id), "phone": phone}})  # fmt: skip
        verification = started["startVerification"]["verification"]
        assert verification["maskedIdentifier"] == "+86138****8000"
        assert verification["kind"] == "PHONE"
        verification_pk = _pk(verification["id"])
        confirmed = await ok(db, actor, CONFIRM, {"input": {
            "verificationId": verification["id"],
            "code": await code_for(db, verification_pk)}})  # fmt: skip
        payload = confirmed["confirmVerification"]
        assert payload["userErrors"] == []
        members.append(payload["membership"]["member"]["id"])
    assert members[0] == members[1]
    assert payload["merge"]["pointsMoved"] == 0  # re-homed with its account: nothing moves
    assert payload["merge"]["membershipsMoved"] == 1
    assert payload["merge"]["survivor"]["id"] == gid("Member", a.member_id)


async def test_bad_input_is_a_typed_user_error(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    actor = merchant_actor(program.merchant_id)
    target = gid("Membership", membership.id)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"membershipId": target}, "INVALID_INPUT"),
        ({"membershipId": target, "phone": "1", "email": "a@b.com"}, "INVALID_INPUT"),
        ({"membershipId": target, "phone": "not a phone"}, "INVALID_INPUT"),
        ({"membershipId": target, "email": "x" * 400}, "INVALID_INPUT"),
        ({"membershipId": gid("Program", program.id), "phone": "13800138000"}, "NOT_FOUND"),
    ]
    for variables, code in cases:
        assert _errors(await ok(db, actor, START, {"input": variables})) == [code]
    for verification_id, code in ((gid("Membership", 1), "1"), (gid("Verification", 7), "x")):
        answer = await ok(db, actor, CONFIRM, {"input": {"verificationId": verification_id,
                                                         "code": code}})  # fmt: skip
        assert _errors(answer)[0] in {"NOT_FOUND", "VERIFICATION_FAILED"}


async def test_merged_member_takes_no_new_membership(db: Database) -> None:
    program = await make_program(db)
    a, b = await make_membership(db, program), await make_membership(db, program)
    merged = await ok(
        db, OPERATOR,
        """mutation($s: ID!, $a: ID!) { mergeMembers(input: {survivorId: $s, absorbedId: $a,
        reason: "same person", idempotencyKey: "m1"}) { merge { accountsFolded } replayed
        userErrors { code } } }""",
        {"s": gid("Member", a.member_id), "a": gid("Member", b.member_id)},
    )  # fmt: skip
    assert merged["mergeMembers"]["merge"]["accountsFolded"] == 1
    # The absorbed member still has its closed membership here, yet takes no new one.
    with pytest.raises(NotFound):
        await enroll_member(db, merchant_actor(program.merchant_id), program_id=program.id,
                            member_number="again", member_id=b.member_id)  # fmt: skip


def _pk(global_id: str) -> int:
    import base64

    return int(base64.b64decode(global_id).decode().split(":")[1])


async def test_identifiers_in_full_for_the_member_only(db: Database) -> None:
    from tests.factories import member_actor
    from tests.identity.helpers import link

    program = await make_program(db)
    membership = await make_membership(db, program)
    member = member_actor(membership, program.merchant_id)
    await link(db, member, membership, " Li.Na@Example.com ", IdentifierKind.EMAIL)
    query = "query($id: ID!) { member(id: $id) { identifiers { kind masked value } } }"
    variables = {"id": gid("Member", membership.member_id)}
    own = (await ok(db, member, query, variables))["member"]["identifiers"]
    assert own == [{"kind": "EMAIL", "masked": "l***@example.com", "value": "li.na@example.com"}]
    for actor in (merchant_actor(program.merchant_id), OPERATOR):
        seen = (await ok(db, actor, query, variables))["member"]["identifiers"]
        assert seen == [{"kind": "EMAIL", "masked": "l***@example.com", "value": None}]
