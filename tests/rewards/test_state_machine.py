"""Every redemption operation from every state: the state after it, or its typed error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alliance.db.engine import Database
from alliance.errors import InvalidTransition
from alliance.rewards.redemptions import (
    cancel_redemption,
    complete_redemption,
    coupons_by_redemption,
    fulfil_redemption,
    redeem_coupon,
    release_expired_redemptions,
)
from tests.factories import OPERATOR, member_actor, merchant_actor
from tests.rewards.helpers import account, reserve, setup, stock

STATES = ("reserved", "fulfilled", "completed", "cancelled", "expired")
OPERATIONS = ("fulfil", "complete", "cancel", "cancel_by_member", "redeem_coupon", "release")

# (state, operation) -> the state after it, or the error it is refused with.
OUTCOMES: dict[tuple[str, str], str | type[Exception]] = {
    ("reserved", "fulfil"): "fulfilled",
    ("reserved", "complete"): InvalidTransition,  # nothing to complete before fulfilment
    ("reserved", "cancel"): "cancelled",
    ("reserved", "cancel_by_member"): "cancelled",
    ("reserved", "redeem_coupon"): "no coupon",
    ("reserved", "release"): "expired",
    ("fulfilled", "fulfil"): "fulfilled",  # the same fulfilment again: a replay
    ("fulfilled", "complete"): "completed",
    ("fulfilled", "cancel"): "cancelled",
    ("fulfilled", "cancel_by_member"): InvalidTransition,  # the merchant cancels a fulfilment
    ("fulfilled", "redeem_coupon"): "completed",
    ("fulfilled", "release"): "expired",
    ("completed", "fulfil"): InvalidTransition,
    ("completed", "complete"): "completed",  # a replay
    ("completed", "cancel"): InvalidTransition,
    ("completed", "cancel_by_member"): InvalidTransition,
    # Completed by the merchant before the code was shown: the code is still good once.
    ("completed", "redeem_coupon"): "completed",
    ("completed", "release"): "completed",
    ("cancelled", "fulfil"): InvalidTransition,
    ("cancelled", "complete"): InvalidTransition,
    ("cancelled", "cancel"): "cancelled",  # a replay
    ("cancelled", "cancel_by_member"): "cancelled",
    ("cancelled", "redeem_coupon"): InvalidTransition,  # its coupon is void
    ("cancelled", "release"): "cancelled",
    ("expired", "fulfil"): InvalidTransition,
    ("expired", "complete"): InvalidTransition,
    ("expired", "cancel"): InvalidTransition,
    ("expired", "cancel_by_member"): InvalidTransition,
    ("expired", "redeem_coupon"): InvalidTransition,  # its coupon is void
    ("expired", "release"): "expired",
}

# What each state leaves on the member's account (balance, held) and the reward's stock
# (left, standing redemptions), from 1000 points and a stock of 5 at 100 points.
BOOKS = {
    "reserved": ((1000, 100), (4, 1)),
    "fulfilled": ((1000, 100), (4, 1)),
    "completed": ((900, 0), (4, 1)),
    "cancelled": ((1000, 0), (5, 0)),
    "expired": ((1000, 0), (5, 0)),
}


def test_the_table_covers_every_state_and_operation() -> None:
    assert set(OUTCOMES) == {(s, o) for s in STATES for o in OPERATIONS}


LATER = timedelta(days=400)


@pytest.mark.parametrize(("state", "operation"), sorted(OUTCOMES))
async def test_transition(db: Database, state: str, operation: str) -> None:
    program, reward, membership = await setup(db, stock=5)
    merchant = merchant_actor(program.merchant_id)
    member = member_actor(membership, program.merchant_id)
    red = (await reserve(db, program, reward, membership)).redemption
    coupon_code = None
    if state in ("fulfilled", "completed", "expired", "cancelled"):
        await fulfil_redemption(db, merchant, redemption_id=red.id)
        coupon_code = (await coupons_by_redemption(db, OPERATOR, [red.id]))[red.id].code
    if state == "completed":
        await complete_redemption(db, merchant, redemption_id=red.id)
    elif state == "cancelled":
        await cancel_redemption(db, merchant, redemption_id=red.id)
    elif state == "expired":
        assert await release_expired_redemptions(db, now=datetime.now(UTC) + LATER) == 1

    async def act() -> None:
        match operation:
            case "fulfil":
                await fulfil_redemption(db, merchant, redemption_id=red.id)
            case "complete":
                await complete_redemption(db, merchant, redemption_id=red.id)
            case "cancel":
                await cancel_redemption(db, merchant, redemption_id=red.id)
            case "cancel_by_member":
                await cancel_redemption(db, member, redemption_id=red.id)
            case "redeem_coupon":
                await redeem_coupon(db, merchant, code=coupon_code or "NO-SUCH-CODE",
                                    store="store 1")  # fmt: skip
            case "release":
                await release_expired_redemptions(db, now=datetime.now(UTC) + LATER)

    outcome = OUTCOMES[(state, operation)]
    if outcome == "no coupon":  # a reserved redemption has no code to present
        from alliance.errors import NotFound

        with pytest.raises(NotFound):
            await act()
        outcome = state
    elif isinstance(outcome, type):
        with pytest.raises(outcome):
            await act()
        outcome = state
    else:
        await act()
    row = await db.fetch_one("SELECT status FROM redemption WHERE id = %(r)s", {"r": red.id})
    assert row == (outcome,)
    books, shelf = BOOKS[str(outcome)]
    assert await account(db, membership) == books
    assert await stock(db, reward) == shelf
