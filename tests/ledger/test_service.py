"""Awards and spends: balances, lots consumed soonest-expiring first, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from alliance.db.engine import Database
from alliance.errors import IdempotencyKeyReused, Inactive, InsufficientPoints, NotFound
from alliance.ledger.models import Lot, LotConsumption, Posting
from alliance.ledger.service import award_points, spend_points
from alliance.programs.models import ExpiryPolicy
from tests.factories import give_points, make_membership, make_program, merchant_actor


async def _lots(db: Database, account_membership: int) -> list[tuple[int, int]]:
    async with db.autocommit() as conn:
        rows = await conn.execute(
            text(
                "SELECT l.amount, l.remaining FROM lot l JOIN account a ON a.id = l.account_id"
                " WHERE a.membership_id = :m ORDER BY l.id"
            ),
            {"m": account_membership},
        )
        return [(row.amount, row.remaining) for row in rows]


class TestAward:
    async def test_award_posts_balanced_double_entry(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        movement = await give_points(db, membership, program, 250)
        async with db.autocommit() as conn:
            postings = (
                await conn.execute(
                    select(Posting.amount, Posting.balance_after)
                    .where(Posting.transaction_id == movement.transaction_id)
                    .order_by(Posting.id)
                )
            ).all()
        assert [tuple(p) for p in postings] == [(250, 250), (-250, None)]
        assert await _lots(db, membership.id) == [(250, 250)]

    async def test_lot_expiry_follows_program_policy(self, db: Database) -> None:
        program = await make_program(
            db, expiry_policy=ExpiryPolicy.END_OF_NTH_MONTH, expiry_value=0, pending_days=3
        )
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 10)
        async with db.autocommit() as conn:
            lot = (
                await conn.execute(select(Lot.available_at, Lot.expires_at, Lot.created_at))
            ).one()
            local_now = await conn.scalar(text("SELECT (now() AT TIME ZONE 'Asia/Shanghai')"))
        assert lot.available_at - lot.created_at == timedelta(days=3)
        # Expires at the start of next month, Shanghai time (UTC+8).
        first_of_next = (local_now.replace(day=1) + timedelta(days=32)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        assert lot.expires_at == (first_of_next - timedelta(hours=8)).replace(tzinfo=UTC)

    async def test_award_to_closed_membership_is_refused(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        async with db.autocommit() as conn:
            await conn.execute(
                text("UPDATE membership SET status = 'closed' WHERE id = :id"),
                {"id": membership.id},
            )
        with pytest.raises(Inactive):
            await give_points(db, membership, program, 5)


class TestSpend:
    async def test_spend_consumes_soonest_expiring_lots_first(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        for points in (10, 20, 30):
            await give_points(db, membership, program, points)
        now = datetime.now(UTC)
        async with db.autocommit() as conn:
            # lot 1 never expires, lot 2 expires later, lot 3 soonest.
            await conn.execute(
                update(Lot).where(Lot.amount == 20).values(expires_at=now + timedelta(days=60))
            )
            await conn.execute(
                update(Lot).where(Lot.amount == 30).values(expires_at=now + timedelta(days=5))
            )
        movement = await spend_points(
            db,
            merchant_actor(program.merchant_id),
            membership_id=membership.id,
            points=45,
            reason="dinner",
            idempotency_key="s1",
        )
        assert movement.balance_after == 15
        assert await _lots(db, membership.id) == [(10, 10), (20, 5), (30, 0)]
        async with db.autocommit() as conn:
            consumed = (
                (await conn.execute(select(LotConsumption.points).order_by(LotConsumption.points)))
                .scalars()
                .all()
            )
        assert consumed == [15, 30]

    async def test_pending_and_expired_points_are_not_spendable(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 10)
        await give_points(db, membership, program, 20)
        await give_points(db, membership, program, 40)
        now = datetime.now(UTC)
        async with db.autocommit() as conn:
            await conn.execute(
                update(Lot).where(Lot.amount == 20).values(available_at=now + timedelta(days=2))
            )
            await conn.execute(
                update(Lot).where(Lot.amount == 40).values(expires_at=now - timedelta(seconds=1))
            )
        actor = merchant_actor(program.merchant_id)
        with pytest.raises(InsufficientPoints):
            await spend_points(
                db,
                actor,
                membership_id=membership.id,
                points=11,
                reason="r",
                idempotency_key="too-much",
            )
        movement = await spend_points(
            db, actor, membership_id=membership.id, points=10, reason="r", idempotency_key="fits"
        )
        assert movement.balance_after == 60

    async def test_held_points_are_not_spendable(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 100)
        async with db.autocommit() as conn:
            await conn.execute(
                text("UPDATE account SET held = 70 WHERE membership_id = :m"), {"m": membership.id}
            )
        actor = merchant_actor(program.merchant_id)
        with pytest.raises(InsufficientPoints):
            await spend_points(
                db, actor, membership_id=membership.id, points=31, reason="r", idempotency_key="k"
            )
        await spend_points(
            db, actor, membership_id=membership.id, points=30, reason="r", idempotency_key="k2"
        )
        async with db.autocommit() as conn:
            await conn.execute(
                text("UPDATE account SET held = 0 WHERE membership_id = :m"), {"m": membership.id}
            )


class TestIdempotency:
    async def test_replay_returns_the_original_movement(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        args = {"membership_id": membership.id, "points": 7, "reason": "r", "idempotency_key": "x"}
        first = await award_points(db, actor, **args)  # type: ignore[arg-type]
        await give_points(db, membership, program, 1)
        again = await award_points(db, actor, **args)  # type: ignore[arg-type]
        assert again.replayed
        assert not first.replayed
        assert (again.transaction_id, again.entry_id, again.balance_after, again.created_at) == (
            first.transaction_id,
            first.entry_id,
            first.balance_after,
            first.created_at,
        )

    async def test_keys_are_scoped_per_client(self, db: Database) -> None:
        program = await make_program(db)
        other = await make_program(db)
        mine = await make_membership(db, program)
        theirs = await make_membership(db, other)
        a = await award_points(
            db,
            merchant_actor(program.merchant_id),
            membership_id=mine.id,
            points=5,
            reason="r",
            idempotency_key="shared",
        )
        b = await award_points(
            db,
            merchant_actor(other.merchant_id),
            membership_id=theirs.id,
            points=5,
            reason="r",
            idempotency_key="shared",
        )
        assert a.transaction_id != b.transaction_id
        assert not b.replayed

    async def test_same_key_for_spend_after_award_is_reuse(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        await award_points(
            db, actor, membership_id=membership.id, points=5, reason="r", idempotency_key="one"
        )
        with pytest.raises(IdempotencyKeyReused):
            await spend_points(
                db, actor, membership_id=membership.id, points=5, reason="r", idempotency_key="one"
            )

    async def test_not_found_does_not_consume_key(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        with pytest.raises(NotFound):
            await award_points(
                db,
                actor,
                membership_id=membership.id + 1000,
                points=5,
                reason="r",
                idempotency_key="k",
            )
        movement = await award_points(
            db, actor, membership_id=membership.id, points=5, reason="r", idempotency_key="k"
        )
        assert not movement.replayed


class TestLedgerGuards:
    async def test_postings_are_append_only(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 5)
        for statement in (
            "UPDATE posting SET amount = 6",
            "DELETE FROM posting",
            "UPDATE ledger_transaction SET reason = 'x'",
            "DELETE FROM audit_record",
        ):
            with pytest.raises(Exception, match="append-only"):
                async with db.autocommit() as conn:
                    await conn.execute(text(statement))

    async def test_unbalanced_postings_are_refused_by_the_database(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        movement = await give_points(db, membership, program, 5)
        with pytest.raises(Exception, match="unbalanced postings"):
            async with db.autocommit() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO posting"
                        " (transaction_id, account_id, program_id, member_id, amount)"
                        " SELECT transaction_id, account_id, program_id, member_id, 1 FROM posting"
                        " WHERE transaction_id = :t AND balance_after IS NULL"
                    ),
                    {"t": movement.transaction_id},
                )

    async def test_balance_cannot_go_negative(self, db: Database) -> None:
        membership = await make_membership(db)
        with pytest.raises(Exception, match="balance_not_negative"):
            async with db.autocommit() as conn:
                await conn.execute(
                    text("UPDATE account SET balance = -1 WHERE membership_id = :m"),
                    {"m": membership.id},
                )
