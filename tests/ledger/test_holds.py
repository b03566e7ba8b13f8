"""Two-phase holds: authorize, capture (all or part), void, expire; every transition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.errors import (
    Forbidden,
    IdempotencyKeyReused,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    NotFound,
)
from alliance.ledger.holds import (
    HoldRecord,
    authorize_hold,
    capture_hold,
    release_expired_holds,
    void_hold,
)
from alliance.ledger.service import spend_points
from alliance.members.queries import MembershipRecord
from tests.factories import give_points, make_membership, make_program, member_actor, merchant_actor

_keys = iter(range(10**9))


async def _member(db: Database, points: int = 100) -> tuple[Any, MembershipRecord]:
    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, points)
    return merchant_actor(program.merchant_id), membership


async def _hold(db: Database, actor: Any, membership: MembershipRecord, points: int,
                **extra: Any) -> HoldRecord:  # fmt: skip
    return await authorize_hold(db, actor, membership_id=membership.id, points=points,
                                kind="discount", reason="bill 42",
                                idempotency_key=f"h{next(_keys)}", **extra)  # fmt: skip


async def _account(db: Database, membership: MembershipRecord) -> tuple[int, int]:
    row = await db.fetch_one(
        "SELECT balance, held FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def test_held_points_cannot_be_spent_elsewhere_and_a_capture_spends_them(
    db: Database,
) -> None:
    actor, membership = await _member(db, 100)
    hold = await _hold(db, actor, membership, 70)
    assert (hold.status, hold.points) == ("authorized", 70)
    assert await _account(db, membership) == (100, 70)
    with pytest.raises(InsufficientPoints):
        await spend_points(db, actor, membership_id=membership.id, points=31, reason="x",
                           idempotency_key="elsewhere")  # fmt: skip
    with pytest.raises(InsufficientPoints):
        await _hold(db, actor, membership, 31)
    capture = await capture_hold(db, actor, hold_id=hold.id, points=50)  # a smaller bill
    assert (capture.balance_after, capture.replayed) == (50, False)
    assert await _account(db, membership) == (50, 0)  # the other 20 are free again
    again = await capture_hold(db, actor, hold_id=hold.id, points=50)
    assert (again.replayed, again.transaction_id, again.entry_id) == (
        True, capture.transaction_id, capture.entry_id)  # fmt: skip
    with pytest.raises(IdempotencyKeyReused):
        await capture_hold(db, actor, hold_id=hold.id, points=60)


async def test_authorization_is_idempotent_by_key(db: Database) -> None:
    actor, membership = await _member(db)
    args: dict[str, Any] = {"membership_id": membership.id, "points": 10, "kind": "discount",
                            "reason": "r", "idempotency_key": "same"}  # fmt: skip
    first = await authorize_hold(db, actor, **args)
    again = await authorize_hold(db, actor, **args)
    assert again.id == first.id
    assert await _account(db, membership) == (100, 10)
    with pytest.raises(IdempotencyKeyReused):
        await authorize_hold(db, actor, **{**args, "points": 11})


async def test_concurrent_authorizations_never_over_reserve(db: Database) -> None:
    actor, membership = await _member(db, 100)
    outcomes = await asyncio.gather(
        *(_hold(db, actor, membership, 30) for _ in range(20)), return_exceptions=True
    )
    assert sum(isinstance(o, HoldRecord) for o in outcomes) == 3
    assert all(isinstance(o, HoldRecord | InsufficientPoints) for o in outcomes)
    assert await _account(db, membership) == (100, 90)


# Every operation from every state: the state after it, or the error it is refused with.
TRANSITIONS: list[tuple[str, str, str | type[Exception]]] = [
    ("authorized", "capture", "captured"),
    ("authorized", "capture_too_many", InvalidInput),
    ("authorized", "void", "voided"),
    ("authorized", "release", "expired"),
    ("captured", "capture", "captured"),  # the same capture again: a replay
    ("captured", "capture_other", IdempotencyKeyReused),
    ("captured", "void", Inactive),
    ("captured", "release", "captured"),
    ("voided", "capture", Inactive),
    ("voided", "void", "voided"),
    ("voided", "release", "voided"),
    ("expired", "capture", Inactive),
    ("expired", "void", "expired"),
    ("expired", "release", "expired"),
]


async def _into(db: Database, actor: Any, membership: MembershipRecord, state: str) -> int:
    hold = await _hold(db, actor, membership, 40, ttl_seconds=60)
    if state == "captured":
        await capture_hold(db, actor, hold_id=hold.id, points=30)
    elif state == "voided":
        await void_hold(db, actor, hold_id=hold.id)
    elif state == "expired":
        await release_expired_holds(db, now=datetime.now(UTC) + timedelta(minutes=2))
    return hold.id


@pytest.mark.parametrize(("state", "operation", "outcome"), TRANSITIONS)
async def test_state_machine(
    db: Database, state: str, operation: str, outcome: str | type[Exception]
) -> None:
    actor, membership = await _member(db)
    hold_id = await _into(db, actor, membership, state)

    async def act() -> None:
        match operation:
            case "capture":
                await capture_hold(db, actor, hold_id=hold_id, points=30)
            case "capture_too_many":
                await capture_hold(db, actor, hold_id=hold_id, points=41)
            case "capture_other":
                await capture_hold(db, actor, hold_id=hold_id, points=31)
            case "void":
                await void_hold(db, actor, hold_id=hold_id)
            case "release":
                await release_expired_holds(db, now=datetime.now(UTC) + timedelta(minutes=2))

    if isinstance(outcome, type):
        with pytest.raises(outcome):
            await act()
        return
    await act()
    row = await db.fetch_one("SELECT status FROM hold WHERE id = %(h)s", {"h": hold_id})
    assert row is not None
    assert row[0] == outcome
    balance, held = await _account(db, membership)
    assert (balance, held) == ((70 if outcome == "captured" else 100), 0)


async def test_a_capture_after_the_deadline_is_refused_before_the_job_runs(
    db: Database,
) -> None:
    actor, membership = await _member(db)
    hold = await _hold(db, actor, membership, 10, ttl_seconds=10)
    await db.fetch_one(
        "UPDATE hold SET expires_at = now() - interval '1 second' WHERE id = %(h)s"
        " RETURNING id", {"h": hold.id},
    )  # fmt: skip
    with pytest.raises(Inactive, match="expired"):
        await capture_hold(db, actor, hold_id=hold.id)


async def test_expired_holds_are_released_once_by_concurrent_jobs(db: Database) -> None:
    actor, membership = await _member(db, 1000)
    for _ in range(30):
        await _hold(db, actor, membership, 10, ttl_seconds=10)
    later = datetime.now(UTC) + timedelta(minutes=1)
    released = await asyncio.gather(
        *(release_expired_holds(db, now=later, batch_size=4) for _ in range(3))
    )
    leftover = await release_expired_holds(db, now=later)
    assert sum(released) + leftover == 30
    assert await _account(db, membership) == (1000, 0)


async def test_who_may_hold(db: Database) -> None:
    actor, membership = await _member(db)
    program = await make_program(db)
    stranger = merchant_actor(program.merchant_id)
    with pytest.raises(NotFound):
        await _hold(db, stranger, membership, 10)
    member = member_actor(membership, actor.merchant_id)
    own = await _hold(db, member, membership, 10)  # a member reserves in the app
    with pytest.raises(Forbidden):
        await capture_hold(db, member, hold_id=own.id)  # capturing is the counter's
    with pytest.raises(NotFound):
        await void_hold(db, stranger, hold_id=own.id)
    assert (await void_hold(db, member, hold_id=own.id)).status == "voided"


async def test_held_points_stay_capturable_when_their_lot_expires(db: Database) -> None:
    actor, membership = await _member(db, 100)
    hold = await _hold(db, actor, membership, 60)
    await db.fetch_one(
        "UPDATE lot SET expires_at = now() - interval '1 hour'"
        " WHERE account_id = %(a)s RETURNING id", {"a": hold.account_id},
    )  # fmt: skip
    from alliance.ledger.expiry import expire_points

    await expire_points(db)  # the lot cannot go whole while 60 of it are held
    assert await _account(db, membership) == (100, 60)
    capture = await capture_hold(db, actor, hold_id=hold.id)
    assert capture.balance_after == 40
    await expire_points(db)  # now what is left of the lot expires
    assert await _account(db, membership) == (0, 0)
