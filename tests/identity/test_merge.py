"""Merging members and unlinking memberships: points, lots and history by ledger transactions."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import (
    DomainError,
    IdempotencyKeyReused,
    InsufficientPoints,
    InvalidInput,
    NotFound,
)
from alliance.identity.merge import merge_members, unlink_membership
from alliance.ledger.holds import authorize_hold
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import HistoryFilter, history_pages_by_member, memberships_by_id
from alliance.programs.models import ExpiryPolicy
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.identity.helpers import same_person


async def _lots(db: Database, membership_id: int) -> list[tuple[int, object, object]]:
    async with db.autocommit() as conn:
        rows = await conn.execute(
            text(
                "SELECT l.remaining, l.available_at, l.expires_at FROM lot l"
                " JOIN account a ON a.id = l.account_id"
                " WHERE a.membership_id = :id AND l.remaining > 0 ORDER BY l.expires_at, l.id"
            ),
            {"id": membership_id},
        )
        return [tuple(row) for row in rows]


class TestMergeMembers:
    async def test_fold_and_rehome_move_points_and_lots_with_their_dates(
        self, db: Database
    ) -> None:
        shared = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=30)
        only_absorbed = await make_program(db)
        survivor = await make_membership(db, shared)
        absorbed = await make_membership(db, shared)
        elsewhere = await make_membership(db, only_absorbed)
        await same_person(db, elsewhere.id, absorbed.member_id)
        await give_points(db, survivor, shared, 100)
        await give_points(db, absorbed, shared, 40)
        await give_points(db, absorbed, shared, 2)
        await give_points(db, elsewhere, only_absorbed, 9)
        lots_before = await _lots(db, absorbed.id)
        result = await merge_members(
            db,
            OPERATOR,
            survivor_id=survivor.member_id,
            absorbed_id=absorbed.member_id,
            reason="same person",
            idempotency_key="merge-1",
        )
        # The shared program's 42 points are folded; the other membership moves as it is.
        assert (result.accounts_folded, result.memberships_moved, result.points_moved) == (1, 1, 42)
        found = await memberships_by_id(db, OPERATOR, [survivor.id, absorbed.id, elsewhere.id])
        assert found[survivor.id].balance == 142
        assert found[absorbed.id].balance == 0
        assert found[absorbed.id].status == "closed"
        assert found[elsewhere.id].member_id == survivor.member_id
        assert found[elsewhere.id].balance == 9
        # The moved lots expire when they would have.
        moved = [lot for lot in await _lots(db, survivor.id) if lot[0] in (40, 2)]
        assert sorted(moved, key=str) == sorted(lots_before, key=str)
        # History: the survivor sees the carry-over and the re-homed membership's entries;
        # the folded membership's entries stay with the absorbed member.
        pages = await history_pages_by_member(
            db,
            OPERATOR,
            [survivor.member_id, absorbed.member_id],
            first=50,
            after=None,
            filters=HistoryFilter(),
        )
        survivor_entries = [(e.kind, e.points) for e in pages[survivor.member_id].items]
        assert survivor_entries == [("merge", 42), ("award", 9), ("award", 100)]
        absorbed_entries = [(e.kind, e.points) for e in pages[absorbed.member_id].items]
        assert absorbed_entries == [("merge", -42), ("award", 2), ("award", 40)]
        assert await verify_ledger(db) == []

    async def test_replay_returns_the_first_result_and_reuse_is_refused(self, db: Database) -> None:
        a, b = await make_membership(db), await make_membership(db)
        first = await merge_members(
            db,
            OPERATOR,
            survivor_id=a.member_id,
            absorbed_id=b.member_id,
            reason="dup",
            idempotency_key="k",
        )
        again = await merge_members(
            db,
            OPERATOR,
            survivor_id=a.member_id,
            absorbed_id=b.member_id,
            reason="dup",
            idempotency_key="k",
        )
        assert again.replayed
        assert again.merge_id == first.merge_id
        with pytest.raises(IdempotencyKeyReused):
            await merge_members(
                db,
                OPERATOR,
                survivor_id=b.member_id,
                absorbed_id=a.member_id,
                reason="dup",
                idempotency_key="k",
            )
        with pytest.raises(NotFound):  # the absorbed member is gone
            await merge_members(
                db,
                OPERATOR,
                survivor_id=b.member_id,
                absorbed_id=a.member_id,
                reason="dup",
                idempotency_key="k2",
            )

    async def test_unknown_member_and_self_merge_are_refused(self, db: Database) -> None:
        a = await make_membership(db)
        with pytest.raises(NotFound):
            await merge_members(
                db,
                OPERATOR,
                survivor_id=a.member_id,
                absorbed_id=999_999,
                reason="x",
                idempotency_key="k",
            )
        with pytest.raises(InvalidInput):
            await merge_members(
                db,
                OPERATOR,
                survivor_id=a.member_id,
                absorbed_id=a.member_id,
                reason="x",
                idempotency_key="k",
            )

    async def test_held_points_block_the_merge(self, db: Database) -> None:
        program = await make_program(db)
        a, b = await make_membership(db, program), await make_membership(db, program)
        await give_points(db, b, program, 50)
        await authorize_hold(
            db,
            merchant_actor(program.merchant_id),
            membership_id=b.id,
            points=10,
            kind="discount",
            reason="bill",
            idempotency_key="h",
        )
        with pytest.raises(InvalidInput):
            await merge_members(
                db,
                OPERATOR,
                survivor_id=a.member_id,
                absorbed_id=b.member_id,
                reason="x",
                idempotency_key="k",
            )

    async def test_merge_under_concurrent_spends_keeps_every_invariant(self, db: Database) -> None:
        programs = [await make_program(db) for _ in range(3)]
        survivors = [await make_membership(db, p) for p in programs]
        # One survivor member with three memberships; the absorbed member shares two programs.
        for membership in survivors[1:]:
            await same_person(db, membership.id, survivors[0].member_id)
        absorbed = [await make_membership(db, p) for p in programs[:2]]
        await same_person(db, absorbed[1].id, absorbed[0].member_id)
        everyone = survivors + absorbed
        for membership, program in zip(everyone, programs + programs[:2], strict=True):
            for _ in range(3):
                await give_points(db, membership, program, 100)
        rng = random.Random(5)

        async def spend(n: int) -> str:
            membership = rng.choice(everyone)
            program = next(p for p in programs if p.id == membership.program_id)
            try:
                await spend_points(
                    db,
                    merchant_actor(program.merchant_id),
                    membership_id=membership.id,
                    points=rng.randint(1, 60),
                    reason="race",
                    idempotency_key=f"s{n}",
                )
            except (InsufficientPoints, DomainError) as error:
                return type(error).__name__
            return "spent"

        async def merge() -> str:
            await asyncio.sleep(0.01)
            await merge_members(
                db,
                OPERATOR,
                survivor_id=survivors[0].member_id,
                absorbed_id=absorbed[0].member_id,
                reason="race",
                idempotency_key="race",
            )
            return "merged"

        outcomes = await asyncio.gather(merge(), *(spend(n) for n in range(60)))
        assert "merged" in outcomes
        assert "spent" in outcomes
        assert await verify_ledger(db) == []
        found = await memberships_by_id(db, OPERATOR, [m.id for m in everyone])
        active = [m for m in found.values() if m.status == "active"]
        assert {m.member_id for m in active} == {survivors[0].member_id}
        assert len(active) == 3
        assert all(found[m.id].balance == 0 for m in absorbed)
        assert all(found[m.id].status == "closed" for m in absorbed)
        # Points neither appeared nor vanished: what was given less what was spent.
        async with db.autocommit() as conn:
            spent = await conn.scalar(
                text(
                    "SELECT coalesce(-sum(amount), 0) FROM posting p JOIN ledger_transaction t"
                    " ON t.id = p.transaction_id WHERE t.kind = 'spend'"
                    " AND p.balance_after IS NOT NULL"
                )
            )
        assert sum(m.balance for m in found.values()) == 1500 - int(spent or 0)


class TestUnlink:
    async def test_unlinked_membership_keeps_its_account_under_a_new_member(
        self, db: Database
    ) -> None:
        program_a, program_b = await make_program(db), await make_program(db)
        a = await make_membership(db, program_a)
        b = await make_membership(db, program_b)
        await give_points(db, b, program_b, 30)
        await merge_members(
            db,
            OPERATOR,
            survivor_id=a.member_id,
            absorbed_id=b.member_id,
            reason="dup",
            idempotency_key="m",
        )
        unlinked = await unlink_membership(
            db, merchant_actor(program_b.merchant_id), membership_id=b.id,
            reason="wrong person", idempotency_key="u1",
        )  # fmt: skip
        new_member = unlinked.to_member_id
        replay = await unlink_membership(
            db, merchant_actor(program_b.merchant_id), membership_id=b.id,
            reason="wrong person", idempotency_key="u1",
        )  # fmt: skip
        assert replay.replayed
        assert replay.to_member_id == new_member
        with pytest.raises(IdempotencyKeyReused):
            await unlink_membership(
                db, merchant_actor(program_b.merchant_id), membership_id=b.id,
                reason="another reason", idempotency_key="u1",
            )  # fmt: skip
        found = await memberships_by_id(db, OPERATOR, [a.id, b.id])
        assert found[b.id].member_id == new_member != a.member_id
        assert found[b.id].balance == 30
        assert found[b.id].program_id == program_b.id
        with pytest.raises(InvalidInput):  # alone now: nothing to unlink from
            await unlink_membership(
                db, OPERATOR, membership_id=b.id, reason="again", idempotency_key="u2"
            )
        assert await verify_ledger(db) == []

    async def test_others_cannot_unlink(self, db: Database) -> None:
        program_a, program_b = await make_program(db), await make_program(db)
        a = await make_membership(db, program_a)
        with pytest.raises(NotFound):
            await unlink_membership(
                db,
                merchant_actor(program_b.merchant_id),
                membership_id=a.id,
                reason="x",
                idempotency_key="u3",
            )
        other = await make_membership(db, program_a)
        with pytest.raises(NotFound):
            await unlink_membership(
                db,
                member_actor(other, program_a.merchant_id),
                membership_id=a.id,
                reason="x",
                idempotency_key="u3",
            )
