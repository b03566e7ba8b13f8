"""Concurrent spends and replays against real PostgreSQL, over real commits."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from alliance.db.engine import Database
from alliance.errors import DomainError, InsufficientPoints
from alliance.ledger.models import LedgerTransaction
from alliance.ledger.service import Movement, award_points, spend_points
from alliance.members.queries import memberships_by_id
from tests.factories import give_points, make_membership, make_program, merchant_actor


async def test_concurrent_spends_never_overdraw(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 40)
    actor = merchant_actor(program.merchant_id)

    async def spend(n: int) -> Movement | DomainError:
        try:
            return await spend_points(
                db,
                actor,
                membership_id=membership.id,
                points=1,
                reason="race",
                idempotency_key=f"race-{n}",
            )
        except DomainError as error:
            return error

    results = await asyncio.gather(*(spend(n) for n in range(100)))
    succeeded = [r for r in results if isinstance(r, Movement)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(succeeded) == 40
    assert len(refused) == 60
    assert all(isinstance(r, InsufficientPoints) for r in refused)
    assert sorted(m.balance_after for m in succeeded) == list(range(40))
    async with db.autocommit() as conn:
        spends = await conn.scalar(select(func.count()).where(LedgerTransaction.kind == "spend"))
    balance = (await memberships_by_id(db, actor, [membership.id]))[membership.id].balance
    assert (spends, balance) == (40, 0)


async def test_concurrent_replays_post_once(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    actor = merchant_actor(program.merchant_id)
    results = await asyncio.gather(
        *(
            award_points(
                db,
                actor,
                membership_id=membership.id,
                points=25,
                reason="once",
                idempotency_key="the-one",
            )
            for _ in range(50)
        )
    )
    assert len({r.transaction_id for r in results}) == 1
    assert len({(r.entry_id, r.balance_after, r.created_at) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    async with db.autocommit() as conn:
        count = await conn.scalar(select(func.count()).select_from(LedgerTransaction))
    assert count == 1
