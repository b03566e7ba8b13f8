"""Hostile strings in every text input of the rewards mutations: refused with a code or
kept verbatim, never a 500, nothing half-written (the ledger verifies after the test)."""

from __future__ import annotations

from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.rewards.gifting import set_gift_policy
from alliance.rewards.models import RewardKind
from tests.factories import merchant_actor
from tests.graphql.helpers import gid, run
from tests.graphql.test_hostile_input import HOSTILE, _fill
from tests.rewards.helpers import member_with_points, reserve, setup

TERMS = {"kind": "COUPON", "name": "n", "pointsPrice": 10}
FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "reward code": ("createReward", "CreateRewardInput",
                    {"programId": "P", "code": "$", "terms": TERMS}),
    "reward name": ("createReward", "CreateRewardInput",
                    {"programId": "P", "code": "c", "terms": TERMS | {"name": "$"}}),
    "description": ("updateReward", "UpdateRewardInput",
                    {"rewardId": "R", "terms": TERMS | {"description": "$"}}),
    "image url": ("updateReward", "UpdateRewardInput",
                  {"rewardId": "R", "terms": TERMS | {"imageUrls": ["$"]}}),
    "tier code": ("updateReward", "UpdateRewardInput",
                  {"rewardId": "R", "terms": TERMS | {"tierCodes": ["$"]}}),
    "reserve key": ("reserveReward", "ReserveRewardInput",
                    {"membershipId": "M", "rewardId": "R", "idempotencyKey": "$"}),
    "shipment": ("fulfilRedemption", "FulfilRedemptionInput",
                 {"redemptionId": "G", "shipment": {"carrier": "$", "trackingNumber": "$"}}),
    "coupon code": ("redeemCoupon", "RedeemCouponInput", {"code": "$", "store": "s"}),
    "coupon store": ("redeemCoupon", "RedeemCouponInput", {"code": "C", "store": "$"}),
    "gift message": ("giftPoints", "GiftPointsInput",
                     {"fromMembershipId": "M", "toMembershipId": "F", "points": 1,
                      "message": "$", "idempotencyKey": "k"}),
    "gift recipient number": ("giftPoints", "GiftPointsInput",
                              {"fromMembershipId": "M", "toMemberNumber": "$", "points": 1,
                               "idempotencyKey": "k"}),
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(FIELDS))
async def test_hostile_strings_are_refused_or_kept_verbatim(db: Database, field: str) -> None:
    program, reward, membership = await setup(db, points=5000, stock=None)
    goods_program, goods, _ = await setup(db, kind=RewardKind.GOODS, stock=None)
    merchant = merchant_actor(program.merchant_id)
    friend = await member_with_points(db, program, 0)
    await set_gift_policy(db, merchant, program_id=program.id, enabled=True,
                          max_points_per_gift=10, daily_limit_points=100)  # fmt: skip
    ids = {"P": gid("Program", program.id), "R": gid("Reward", reward.id),
           "M": gid("Membership", membership.id), "F": gid("Membership", friend.id),
           "C": "NO-SUCH-CODE"}  # fmt: skip
    mutation, input_type, template = FIELDS[field]
    outcomes: dict[str, str] = {}
    for n, text in enumerate(HOSTILE):
        actor = merchant
        if mutation == "fulfilRedemption":  # a fresh reservation of a shipped reward each time
            shopper = await member_with_points(db, goods_program, 500)
            red = await reserve(db, goods_program, goods, shopper)
            ids["G"] = gid("Redemption", red.redemption.id)
            actor = merchant_actor(goods_program.merchant_id)
        variables = {"input": _fill(template, text, ids)}
        if "idempotencyKey" in variables["input"] and field != "reserve key":
            variables["input"]["idempotencyKey"] = f"k{n}"
        if field == "reward name":
            variables["input"]["code"] = f"c{n}"
        result = await run(db, actor, f"""mutation($input: {input_type}!) {{
            {mutation}(input: $input) {{ userErrors {{ code message field }} }} }}""",
                           variables)  # fmt: skip
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
    assert outcomes["\x00nul"] != "ok"
    assert outcomes["\u202eevil\u202c"] != "ok"
    if field == "gift message":  # free text is kept verbatim
        assert outcomes["积分清零 普通 黄金 白金"] == "ok"
