"""Every role against every rewards operation (the matrix of test_matrix.py, for rewards).

Two merchants, A and B, each with a program (points expire 30 days after the earn, so
members have points expiring), a reward, members with points, a reserved redemption, a
fulfilled one with its coupon, and gifts allowed. Outcomes as in test_matrix.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, cast

import pytest

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.exchange.service import set_partner_acceptance
from alliance.programs.models import ExpiryPolicy
from alliance.rewards.gifting import set_gift_policy
from alliance.rewards.redemptions import coupons_by_redemption, fulfil_redemption
from tests.authz.outcomes import outcome
from tests.authz.test_matrix import ROLES, H
from tests.factories import (
    ALLIANCE_FINANCE,
    AUDITOR,
    OPERATOR,
    finance_actor,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.graphql.helpers import gid, run
from tests.rewards.helpers import make_reward, member_with_points, reserve


@dataclass
class World:
    actors: dict[str, Actor]
    ids: dict[str, str]


@pytest.fixture
async def world(db: Database) -> World:
    ids: dict[str, str] = {}
    actors: dict[str, Actor] = {}
    programs = []
    for side in "ab":
        merchant = await make_merchant(db)
        program = await make_program(db, merchant, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN,
                                     expiry_value=30)  # fmt: skip
        programs.append(program)
        seller = merchant_actor(merchant)
        reward = await make_reward(db, program, stock=10)
        membership = await member_with_points(db, program, 1000)
        friend = await member_with_points(db, program, 0)
        reserved = (await reserve(db, program, reward, membership)).redemption
        fulfilled = (await reserve(db, program, reward, membership)).redemption
        await fulfil_redemption(db, seller, redemption_id=fulfilled.id)
        coupon = (await coupons_by_redemption(db, OPERATOR, [fulfilled.id]))[fulfilled.id]
        await set_gift_policy(db, seller, program_id=program.id, enabled=True,
                              max_points_per_gift=100, daily_limit_points=1000)  # fmt: skip
        ids |= {
            f"program_{side}": gid("Program", program.id),
            f"reward_{side}": gid("Reward", reward.id),
            f"membership_{side}": gid("Membership", membership.id),
            f"friend_{side}": gid("Membership", friend.id),
            f"reserved_{side}": gid("Redemption", reserved.id),
            f"fulfilled_{side}": gid("Redemption", fulfilled.id),
            f"coupon_{side}": coupon.code,
        }
        if side == "a":
            actors = {
                "operator": OPERATOR,
                "auditor": AUDITOR,
                "finance_wide": ALLIANCE_FINANCE,
                "finance_a": finance_actor(merchant),
                "merchant_a": seller,
                "member_a": member_actor(membership, merchant.id),
            }
    # B takes A's points: A's members may pay for B's rewards with them.
    await set_partner_acceptance(db, merchant_actor(programs[1].merchant_id),
                                 program_id=programs[0].id, accepts=True)  # fmt: skip
    return World(actors, ids)


_keys = itertools.count()
TERMS = '{kind: COUPON, name: "Cake", pointsPrice: 50}'


def _each(make: Any) -> dict[str, tuple[str, Any]]:
    """The operation on A's side and on B's."""
    return {f"{name}({side.upper()})": (query, variables)
            for side in "ab" for name, query, variables in [make(side)]}  # fmt: skip


def _on(name: str, query: str, key: str) -> Any:
    return lambda side: (name, query, lambda ids: {"x": ids[f"{key}_{side}"]})


OPERATIONS: dict[str, tuple[str, Any]] = {
    **_each(
        lambda side: (
            "createReward",
            f"""mutation($x: ID!) {{ createReward(input: {{
        programId: $x, code: "cake", terms: {TERMS}, stock: 3}}) {{ reward {{ id }}
        userErrors {{ code }} }} }}""",
            lambda ids: {"x": ids[f"program_{side}"]},
        )
    ),
    **_each(
        _on(
            "updateReward",
            f"""mutation($x: ID!) {{ updateReward(input: {{rewardId: $x,
        terms: {TERMS}, addStock: 1}}) {{ reward {{ version }} userErrors {{ code }} }} }}""",
            "reward",
        )
    ),
    "reserveReward(B, paid with A points)": (
        """mutation($m: ID!, $r: ID!, $k: String!) {
        reserveReward(input: {membershipId: $m, rewardId: $r, idempotencyKey: $k}) {
        redemption { id paidProgram { id } } userErrors { code } } }""",
        lambda ids: {"m": ids["membership_a"], "r": ids["reward_b"], "k": f"k{next(_keys)}"},
    ),
    **_each(
        _on(
            "archiveReward",
            """mutation($x: ID!) { archiveReward(input: {rewardId: $x}) {
        reward { status } userErrors { code } } }""",
            "reward",
        )
    ),
    **_each(
        lambda side: (
            "reserveReward",
            """mutation($m: ID!, $r: ID!, $k: String!) {
        reserveReward(input: {membershipId: $m, rewardId: $r, idempotencyKey: $k}) {
        redemption { id } userErrors { code } } }""",
            lambda ids: {
                "m": ids[f"membership_{side}"],
                "r": ids[f"reward_{side}"],
                "k": f"k{next(_keys)}",
            },
        )
    ),
    **_each(
        _on(
            "fulfilRedemption",
            """mutation($x: ID!) { fulfilRedemption(input: {
        redemptionId: $x}) { redemption { status } userErrors { code } } }""",
            "reserved",
        )
    ),
    **_each(
        _on(
            "completeRedemption",
            """mutation($x: ID!) { completeRedemption(input: {
        redemptionId: $x}) { redemption { status } userErrors { code } } }""",
            "fulfilled",
        )
    ),
    **_each(
        _on(
            "cancelRedemption",
            """mutation($x: ID!) { cancelRedemption(input: {
        redemptionId: $x}) { redemption { status } userErrors { code } } }""",
            "reserved",
        )
    ),
    **_each(
        lambda side: (
            "redeemCoupon",
            """mutation($c: String!) { redeemCoupon(input: {
        code: $c, store: "s1"}) { redemption { status } userErrors { code } } }""",
            lambda ids: {"c": ids[f"coupon_{side}"]},
        )
    ),
    **_each(
        _on(
            "setGiftPolicy",
            """mutation($x: ID!) { setGiftPolicy(input: {programId: $x,
        enabled: true, maxPointsPerGift: 10, dailyLimitPoints: 10}) { giftPolicy { enabled }
        userErrors { code } } }""",
            "program",
        )
    ),
    **_each(
        lambda side: (
            "giftPoints",
            """mutation($f: ID!, $t: ID!, $k: String!) {
        giftPoints(input: {fromMembershipId: $f, toMembershipId: $t, points: 5,
        idempotencyKey: $k}) { entry { points } userErrors { code } } }""",
            lambda ids: {
                "f": ids[f"membership_{side}"],
                "t": ids[f"friend_{side}"],
                "k": f"g{next(_keys)}",
            },
        )
    ),
    **_each(
        _on(
            "read rewards",
            """query($x: ID!) { rewards(programId: $x) {
        edges { node { name canAfford } } } }""",
            "program",
        )
    ),
    **_each(
        _on(
            "read redemption",
            """query($x: ID!) { node(id: $x) { ... on Redemption {
        status coupon { code } } } }""",
            "fulfilled",
        )
    ),
    **_each(
        _on(
            "read redemptions",
            """query($x: ID!) { redemptions(membershipId: $x) {
        edges { node { status } } } }""",
            "membership",
        )
    ),
    **_each(
        _on(
            "rewardRedemptions",
            """query($x: ID!) { rewardRedemptions(rewardId: $x) {
        edges { node { status } } } }""",
            "reward",
        )
    ),
    **_each(
        _on(
            "expiryReminders",
            """query($x: ID!) { expiryReminders(programId: $x,
        withinDays: 60) { edges { node { pointsExpiring affordableRewards { name } } } } }""",
            "program",
        )
    ),
    **_each(
        _on(
            "read giftPolicy",
            """query($x: ID!) { giftPolicy(programId: $x) {
        enabled } }""",
            "program",
        )
    ),
}

F, N = "FORBIDDEN", "NOT_FOUND"
# Columns in ROLES order: operator, auditor, finance_wide, finance_a, merchant_a, member_a.
EXPECTED: dict[str, tuple[str, ...]] = {
    "createReward(A)":        (F, F, F, F, "ok", F),
    "createReward(B)":        (F, F, F, F, N, F),
    "updateReward(A)":        (F, F, F, F, "ok", F),
    "updateReward(B)":        (F, F, F, F, N, F),
    "archiveReward(A)":       (F, F, F, F, "ok", F),
    "archiveReward(B)":       (F, F, F, F, N, F),
    "reserveReward(A)":       (F, F, F, F, "ok", "ok"),
    "reserveReward(B)":       (F, F, F, F, N, N),
    # Only the member spends their points at a partner; merchant A may not for them.
    "reserveReward(B, paid with A points)": (F, F, F, F, F, "ok"),
    "fulfilRedemption(A)":    (F, F, F, F, "ok", F),
    "fulfilRedemption(B)":    (F, F, F, F, N, F),
    "completeRedemption(A)":  (F, F, F, F, "ok", F),
    "completeRedemption(B)":  (F, F, F, F, N, F),
    "cancelRedemption(A)":    (F, F, F, F, "ok", "ok"),
    "cancelRedemption(B)":    (F, F, F, F, N, N),
    "redeemCoupon(A)":        (F, F, F, F, "ok", F),
    "redeemCoupon(B)":        (F, F, F, F, N, F),
    "setGiftPolicy(A)":       (F, F, F, F, "ok", F),
    "setGiftPolicy(B)":       (F, F, F, F, N, F),
    "giftPoints(A)":          (F, F, F, F, "ok", "ok"),
    "giftPoints(B)":          (F, F, F, F, N, N),
    "read rewards(A)":        ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read rewards(B)":        ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read redemption(A)":     ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read redemption(B)":     ("ok", "ok", "ok", H, H, H),
    "read redemptions(A)":    ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read redemptions(B)":    ("ok", "ok", "ok", H, H, H),
    "rewardRedemptions(A)":   ("ok", "ok", "ok", "ok", "ok", F),
    "rewardRedemptions(B)":   ("ok", "ok", "ok", H, H, F),
    "expiryReminders(A)":     ("ok", F, F, F, "ok", F),
    "expiryReminders(B)":     ("ok", F, F, F, N, F),
    "read giftPolicy(A)":     ("ok", "ok", "ok", "ok", "ok", "ok"),
    "read giftPolicy(B)":     ("ok", "ok", "ok", "ok", "ok", "ok"),
}  # fmt: skip

CASES = [
    pytest.param(operation, role, expected, id=f"{operation}-{role}")
    for operation, row in EXPECTED.items()
    for role, expected in zip(ROLES, row, strict=True)
]


def test_matrix_covers_every_operation_and_role() -> None:
    assert set(EXPECTED) == set(OPERATIONS)


def test_every_rewards_operation_of_the_schema_is_in_the_matrix() -> None:
    from schema.rewards import RewardMutations, RewardQueries

    definitions = [cast(Any, cls).__strawberry_definition__
                   for cls in (RewardMutations, RewardQueries)]  # fmt: skip
    fields = {field.python_name for definition in definitions for field in definition.fields}
    covered = {operation.split("(")[0].removeprefix("read ") for operation in OPERATIONS}
    camel = {"".join(p.capitalize() if i else p for i, p in enumerate(f.split("_")))
             for f in fields}  # fmt: skip
    assert camel <= covered


@pytest.mark.parametrize(("operation", "role", "expected"), CASES)
async def test_authorization(
    db: Database, world: World, operation: str, role: str, expected: str
) -> None:
    query, variables = OPERATIONS[operation]
    result = await run(db, world.actors[role], query, variables(world.ids))
    assert outcome(result) == expected, result
