"""Mutations through GraphQL: payloads, userErrors per business failure, idempotency."""

from __future__ import annotations

from typing import Any

import pytest

from alliance.db.engine import Database
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.graphql.helpers import error_codes, gid, ok, run

AWARD = """
mutation($input: MovePointsInput!) {
  awardPoints(input: $input) {
    entry { id kind points balanceAfter reason program { code } }
    membership { balance { points held spendable } }
    replayed
    userErrors { code message field }
  }
}"""

SPEND = AWARD.replace("awardPoints", "spendPoints")


def move_input(membership_id: int, points: Any, key: str, reason: str = "thanks") -> dict[str, Any]:
    return {
        "input": {
            "membershipId": gid("Membership", membership_id),
            "points": points,
            "reason": reason,
            "idempotencyKey": key,
        }
    }


class TestCreateMerchant:
    async def test_operator_creates_merchant(self, db: Database) -> None:
        data = await ok(
            db,
            OPERATOR,
            """mutation { createMerchant(input: {code: "golden-wok",
            name: "金锅 Golden Wok"}) { merchant { id code name } userErrors { code } } }""",
        )
        payload = data["createMerchant"]
        assert payload["userErrors"] == []
        assert payload["merchant"]["name"] == "金锅 Golden Wok"

    async def test_duplicate_code_is_a_user_error(self, db: Database) -> None:
        await make_merchant(db, code="dup")
        data = await ok(
            db,
            OPERATOR,
            """mutation { createMerchant(input: {code: "dup",
            name: "Again"}) { merchant { id } userErrors { code field } } }""",
        )
        assert data["createMerchant"] == {
            "merchant": None,
            "userErrors": [{"code": "ALREADY_EXISTS", "field": ["input", "code"]}],
        }

    @pytest.mark.parametrize("code", ["", "UPPER", "-dash", "a" * 41, "spa ce", "x;drop"])
    async def test_bad_code_is_invalid_input(self, db: Database, code: str) -> None:
        data = await ok(
            db,
            OPERATOR,
            """mutation($code: String!) { createMerchant(input:
            {code: $code, name: "n"}) { userErrors { code field } } }""",
            {"code": code},
        )
        assert data["createMerchant"]["userErrors"] == [
            {"code": "INVALID_INPUT", "field": ["input", "code"]}
        ]

    async def test_merchant_may_not_create_merchants(self, db: Database) -> None:
        merchant = await make_merchant(db)
        result = await run(
            db,
            merchant_actor(merchant),
            """mutation { createMerchant(input:
            {code: "evil", name: "n"}) { merchant { id } } }""",
        )
        assert error_codes(result) == ["FORBIDDEN"]
        assert result["data"] is None or result["data"]["createMerchant"] is None


class TestCreateProgram:
    QUERY = """mutation($input: CreateProgramInput!) { createProgram(input: $input) {
        program { code pointValue expiryPolicy expiryValue merchant { code } }
        userErrors { code field } } }"""

    async def test_creates_program_with_system_accounts(self, db: Database) -> None:
        merchant = await make_merchant(db, code="cafe")
        data = await ok(
            db,
            OPERATOR,
            self.QUERY,
            {
                "input": {
                    "merchantId": gid("Merchant", merchant.id),
                    "code": "stars",
                    "name": "Stars",
                    "unitName": "星",
                    "pointValue": "0.02",
                    "expiryPolicy": "DAYS_AFTER_EARN",
                    "expiryValue": 365,
                }
            },
        )
        assert data["createProgram"]["program"] == {
            "code": "stars",
            "pointValue": "0.020000",
            "expiryPolicy": "DAYS_AFTER_EARN",
            "expiryValue": 365,
            "merchant": {"code": "cafe"},
        }

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"pointValue": "0"}, "pointValue"),
            ({"pointValue": "-1"}, "pointValue"),
            ({"pointValue": "0.0000001"}, "pointValue"),
            ({"pointValue": "NaN"}, "pointValue"),
            ({"expiryPolicy": "NEVER", "expiryValue": 3}, "expiryValue"),
            ({"expiryPolicy": "DAYS_AFTER_EARN", "expiryValue": -1}, "expiryValue"),
            ({"pendingDays": 1000}, "pendingDays"),
            ({"unitName": " "}, "unitName"),
            ({"name": "bad\u0000name"}, "name"),
        ],
    )
    async def test_invalid_program_is_refused(
        self, db: Database, change: dict[str, Any], field: str
    ) -> None:
        merchant = await make_merchant(db)
        program_input = {
            "merchantId": gid("Merchant", merchant.id),
            "code": "p",
            "name": "P",
            "unitName": "pt",
            "pointValue": "0.01",
        } | change
        data = await ok(db, OPERATOR, self.QUERY, {"input": program_input})
        assert data["createProgram"]["userErrors"] == [
            {"code": "INVALID_INPUT", "field": ["input", field]}
        ]

    async def test_unknown_merchant_is_not_found(self, db: Database) -> None:
        data = await ok(
            db,
            OPERATOR,
            self.QUERY,
            {
                "input": {
                    "merchantId": gid("Merchant", 999),
                    "code": "p",
                    "name": "P",
                    "unitName": "pt",
                    "pointValue": "0.01",
                }
            },
        )
        assert data["createProgram"]["userErrors"][0]["code"] == "NOT_FOUND"

    async def test_id_of_another_type_is_not_found(self, db: Database) -> None:
        program = await make_program(db)
        data = await ok(
            db,
            OPERATOR,
            self.QUERY,
            {
                "input": {
                    "merchantId": gid("Program", program.id),
                    "code": "p",
                    "name": "P",
                    "unitName": "pt",
                    "pointValue": "0.01",
                }
            },
        )
        assert data["createProgram"]["userErrors"] == [
            {"code": "NOT_FOUND", "field": ["input", "merchantId"]}
        ]


class TestEnrollMember:
    QUERY = """mutation($input: EnrollMemberInput!) { enrollMember(input: $input) {
        membership { memberNumber balance { points } member { displayName } }
        userErrors { code field } } }"""

    async def test_enrols_a_new_member(self, db: Database) -> None:
        program = await make_program(db)
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            self.QUERY,
            {
                "input": {
                    "programId": gid("Program", program.id),
                    "memberNumber": "8812",
                    "displayName": "李娜",
                }
            },
        )
        assert data["enrollMember"] == {
            "membership": {
                "memberNumber": "8812",
                "balance": {"points": 0},
                "member": {"displayName": "李娜"},
            },
            "userErrors": [],
        }

    async def test_member_number_unique_per_program(self, db: Database) -> None:
        program = await make_program(db)
        await make_membership(db, program, member_number="1")
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            self.QUERY,
            {"input": {"programId": gid("Program", program.id), "memberNumber": "1"}},
        )
        assert data["enrollMember"]["userErrors"] == [
            {"code": "ALREADY_EXISTS", "field": ["input", "memberNumber"]}
        ]

    async def test_cannot_enrol_into_another_merchants_program(self, db: Database) -> None:
        program = await make_program(db)
        other = await make_merchant(db)
        data = await ok(
            db,
            merchant_actor(other),
            self.QUERY,
            {"input": {"programId": gid("Program", program.id), "memberNumber": "1"}},
        )
        assert data["enrollMember"]["userErrors"] == [
            {"code": "NOT_FOUND", "field": ["input", "programId"]}
        ]

    async def test_cannot_link_a_member_the_merchant_does_not_know(self, db: Database) -> None:
        stranger = await make_membership(db)
        program = await make_program(db)
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            self.QUERY,
            {
                "input": {
                    "programId": gid("Program", program.id),
                    "memberNumber": "1",
                    "memberId": gid("Member", stranger.member_id),
                }
            },
        )
        assert data["enrollMember"]["userErrors"] == [
            {"code": "NOT_FOUND", "field": ["input", "memberId"]}
        ]

    async def test_links_own_member_into_second_program(self, db: Database) -> None:
        first = await make_program(db)
        merchant = await make_merchant(db)
        first = await make_program(db, merchant)
        second = await make_program(db, merchant)
        known = await make_membership(db, first)
        data = await ok(
            db,
            merchant_actor(merchant),
            self.QUERY,
            {
                "input": {
                    "programId": gid("Program", second.id),
                    "memberNumber": "X",
                    "memberId": gid("Member", known.member_id),
                }
            },
        )
        assert data["enrollMember"]["userErrors"] == []


class TestAwardAndSpend:
    async def test_award_returns_entry_and_balance(self, db: Database) -> None:
        program = await make_program(db, code="wok")
        membership = await make_membership(db, program)
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            AWARD,
            move_input(membership.id, 120, "k1", "生日礼"),
        )
        payload = data["awardPoints"]
        assert payload["userErrors"] == []
        assert payload["replayed"] is False
        assert payload["entry"]["kind"] == "AWARD"
        assert payload["entry"]["points"] == 120
        assert payload["entry"]["balanceAfter"] == 120
        assert payload["entry"]["reason"] == "生日礼"
        assert payload["entry"]["program"] == {"code": "wok"}
        assert payload["membership"]["balance"] == {"points": 120, "held": 0, "spendable": 120}

    async def test_replay_returns_first_result(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        first = await ok(db, actor, AWARD, move_input(membership.id, 10, "same"))
        await give_points(db, membership, program, 5)
        again = await ok(db, actor, AWARD, move_input(membership.id, 10, "same"))
        assert again["awardPoints"]["replayed"] is True
        assert again["awardPoints"]["entry"] == first["awardPoints"]["entry"]
        assert again["awardPoints"]["membership"]["balance"]["points"] == 15

    async def test_key_reuse_with_other_input_is_refused(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        await ok(db, actor, AWARD, move_input(membership.id, 10, "k"))
        data = await ok(db, actor, AWARD, move_input(membership.id, 11, "k"))
        assert data["awardPoints"]["userErrors"] == [
            {
                "code": "IDEMPOTENCY_KEY_REUSED",
                "field": ["input", "idempotencyKey"],
                "message": "idempotency key k was already used for a different request",
            }
        ]
        spend = await ok(db, actor, SPEND, move_input(membership.id, 10, "k"))
        assert spend["spendPoints"]["userErrors"][0]["code"] == "IDEMPOTENCY_KEY_REUSED"

    async def test_spend_more_than_balance(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 30)
        data = await ok(
            db, merchant_actor(program.merchant_id), SPEND, move_input(membership.id, 31, "s")
        )
        assert data["spendPoints"] == {
            "entry": None,
            "membership": None,
            "replayed": False,
            "userErrors": [
                {
                    "code": "INSUFFICIENT_POINTS",
                    "field": ["input", "points"],
                    "message": "not enough spendable points",
                }
            ],
        }

    async def test_failed_spend_does_not_burn_the_key(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        failed = await ok(db, actor, SPEND, move_input(membership.id, 5, "retry-me"))
        assert failed["spendPoints"]["userErrors"][0]["code"] == "INSUFFICIENT_POINTS"
        await give_points(db, membership, program, 5)
        retried = await ok(db, actor, SPEND, move_input(membership.id, 5, "retry-me"))
        assert retried["spendPoints"]["entry"]["balanceAfter"] == 0

    @pytest.mark.parametrize(
        ("points", "key", "reason", "field"),
        [
            (0, "k", "r", "points"),
            (-5, "k", "r", "points"),
            (10**12, "k", "r", "points"),
            (5, "", "r", "idempotencyKey"),
            (5, "k" * 129, "r", "idempotencyKey"),
            (5, "has space", "r", "idempotencyKey"),
            (5, "k", "", "reason"),
            (5, "k", "x" * 501, "reason"),
        ],
    )
    async def test_invalid_movement_input(
        self, db: Database, points: int, key: str, reason: str, field: str
    ) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            AWARD,
            move_input(membership.id, points, key, reason),
        )
        assert data["awardPoints"]["userErrors"][0]["code"] == "INVALID_INPUT"
        assert data["awardPoints"]["userErrors"][0]["field"] == ["input", field]

    async def test_points_beyond_64_bits_are_a_graphql_error(self, db: Database) -> None:
        membership = await make_membership(db)
        result = await run(db, merchant_actor(1), AWARD, move_input(membership.id, 2**64, "k"))
        assert error_codes(result) == ["GRAPHQL_VALIDATION_FAILED"]

    async def test_foreign_membership_looks_missing(self, db: Database) -> None:
        membership = await make_membership(db)
        stranger = await make_merchant(db)
        for target in (membership.id, 10**9):
            data = await ok(db, merchant_actor(stranger), AWARD, move_input(target, 5, "k"))
            assert data["awardPoints"]["userErrors"] == [
                {
                    "code": "NOT_FOUND",
                    "field": ["input", "membershipId"],
                    "message": "membership not found",
                }
            ]

    async def test_member_spends_own_points(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 50)
        actor = member_actor(membership, program.merchant_id)
        data = await ok(db, actor, SPEND, move_input(membership.id, 20, "m1"))
        assert data["spendPoints"]["entry"]["balanceAfter"] == 30

    async def test_member_cannot_spend_someone_elses_points(self, db: Database) -> None:
        program = await make_program(db)
        mine = await make_membership(db, program)
        theirs = await make_membership(db, program)
        await give_points(db, theirs, program, 50)
        data = await ok(
            db, member_actor(mine, program.merchant_id), SPEND, move_input(theirs.id, 20, "m1")
        )
        assert data["spendPoints"]["userErrors"][0]["code"] == "NOT_FOUND"

    async def test_member_cannot_award(self, db: Database) -> None:
        program = await make_program(db)
        mine = await make_membership(db, program)
        result = await run(
            db, member_actor(mine, program.merchant_id), AWARD, move_input(mine.id, 20, "m1")
        )
        assert error_codes(result) == ["FORBIDDEN"]

    async def test_unauthenticated_is_rejected(self, db: Database) -> None:
        membership = await make_membership(db)
        result = await run(db, None, AWARD, move_input(membership.id, 5, "k"))
        assert error_codes(result) == ["UNAUTHENTICATED"]
