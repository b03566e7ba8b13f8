"""points.expiring: points expiring within the window are told once per membership."""

from __future__ import annotations

import asyncio
from typing import Any

from alliance.db.engine import Database
from alliance.events.expiring import notify_expiring
from alliance.programs.models import ExpiryPolicy
from tests.factories import give_points, make_membership, make_program


async def _events(db: Database) -> list[tuple[Any, ...]]:
    return await db.fetch_all(
        "SELECT member_id, (payload->>'points')::bigint, (payload->>'lots')::int"
        " FROM outbox_event WHERE topic = 'points.expiring' ORDER BY id"
    )


async def test_told_once_per_membership_within_the_window(db: Database) -> None:
    soon = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=3)
    later = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=60)
    never = await make_program(db)
    membership = await make_membership(db, soon)
    await give_points(db, membership, soon, 10)
    await give_points(db, membership, soon, 5)
    far = await make_membership(db, later)
    await give_points(db, far, later, 7)
    keeps = await make_membership(db, never)
    await give_points(db, keeps, never, 9)

    assert await notify_expiring(db) == 1
    assert await _events(db) == [(membership.member_id, 15, 2)]
    assert await notify_expiring(db) == 0  # told once
    await give_points(db, membership, soon, 1)
    assert await notify_expiring(db, batch=1) == 1  # a new lot: told too
    assert (await _events(db))[-1] == (membership.member_id, 1, 1)


async def test_concurrent_runs_tell_once(db: Database) -> None:
    program = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=1)
    for _ in range(5):
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 3)
    told = await asyncio.gather(*(notify_expiring(db, batch=2) for _ in range(4)))
    assert sum(told) == 5
    assert len(await _events(db)) == 5
