"""The loaders of `ByIds` reads (schema/loaders.py `StatementLoader`): the batching, the
cache, the failures and the cancellations of strawberry's DataLoader, with each batch
sent from a callback rather than a task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from alliance.config import Settings
from alliance.db.by_ids import ByIds
from alliance.db.engine import Database
from alliance.members.queries import memberships_by_id
from schema.loaders import Loaders, StatementLoader
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)


@pytest.fixture(params=["shared", "alone"])
async def either_db(
    request: pytest.FixtureRequest, db: Database, database_url: str, settings: Settings
) -> AsyncIterator[Database]:
    """The test database, with reads shared across requests and without."""
    if request.param == "shared":
        yield db
        return
    alone = Database(database_url, replace(settings, shared_reads=False))
    try:
        yield alone
    finally:
        await alone.dispose()


async def test_one_statement_per_turn_and_each_key_once(either_db: Database) -> None:
    db = either_db
    program = await make_program(db)
    memberships = [await make_membership(db, program) for _ in range(5)]
    for points, membership in enumerate(memberships, start=1):
        await give_points(db, membership, program, points)
    loader = Loaders(db, OPERATOR).membership
    assert isinstance(loader, StatementLoader)
    asked = [m.id for m in memberships] + [memberships[0].id, 2**62]
    with db.count_statements() as counter:
        found = await asyncio.gather(*(loader.load(key) for key in asked))
    assert counter.count == 1, counter.statements
    assert [r.balance if r else None for r in found] == [1, 2, 3, 4, 5, 1, None]
    assert found[0] is found[5]
    with db.count_statements() as counter:
        again = await loader.load(memberships[2].id)  # from the loader's cache
    assert counter.count == 0
    assert again is found[2]


async def test_the_actor_rule_applies(db: Database) -> None:
    program, other = await make_program(db), await make_program(db)
    mine, theirs = await make_membership(db, program), await make_membership(db, other)
    by_merchant = Loaders(db, merchant_actor(program.merchant_id)).membership
    by_member = Loaders(db, member_actor(theirs, other.merchant_id)).membership
    assert [r and r.id for r in await by_merchant.load_many([mine.id, theirs.id])] == [
        mine.id,
        None,
    ]
    assert [r and r.id for r in await by_member.load_many([mine.id, theirs.id])] == [
        None,
        theirs.id,
    ]


async def test_a_failing_read_fails_each_load_of_its_batch(db: Database) -> None:
    broken: ByIds[object] = ByIds(
        lambda actor, ids: ("SELECT id, 1 / 0 FROM unnest(%(ids)s::BIGINT[]) AS id", {"ids": ids}),
        lambda row: row,
    )
    loader = StatementLoader(db, OPERATOR, broken)
    found = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(f, Exception) and "division by zero" in str(f) for f in found)
    unmappable: ByIds[object] = ByIds(memberships_by_id.statement, lambda row: 1 / 0)
    program = await make_program(db)
    membership = await make_membership(db, program)
    loader = StatementLoader(db, OPERATOR, unmappable)
    with pytest.raises(ZeroDivisionError):
        await loader.load(membership.id)


async def test_a_load_given_up_leaves_the_others_theirs(either_db: Database) -> None:
    db = either_db
    program = await make_program(db)
    a, b = await make_membership(db, program), await make_membership(db, program)
    loader = Loaders(db, OPERATOR).membership
    first, second = loader.load(a.id), loader.load(b.id)
    first.cancel()  # type: ignore[attr-defined]  # a future
    assert (await second).id == b.id  # type: ignore[union-attr]
    # Every load given up before the turn: nothing is read.
    loader = Loaders(db, OPERATOR).membership
    with db.count_statements() as counter:
        lone = loader.load(a.id)
        lone.cancel()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
    assert counter.count == 0
    assert (await loader.load(a.id)).id == a.id  # type: ignore[union-attr]  # not the cancelled one
