"""Qualifying activity and the upgrade on the event that reaches a tier."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import NotFound
from alliance.members.queries import MembershipRecord
from alliance.tiers.models import TierBasis
from alliance.tiers.queries import held_tiers_by_membership, standings_by_membership
from alliance.tiers.service import TierMove, record_activity
from tests.factories import (
    OPERATOR,
    give_points,
    make_ladder,
    make_membership,
    make_program,
    qualify,
)

History = list[tuple[str, str, str, Decimal | int]]
"""(from, to, reason, qualifying total); a Decimal total equals the int it reads as."""


async def history(db: Database, membership: MembershipRecord) -> History:
    """Each tier change, oldest first."""
    rows = await db.fetch_all(
        "SELECT f.code, t.code, c.reason, c.qualifying_total FROM tier_change c"
        " JOIN tier f ON f.id = c.from_tier_id JOIN tier t ON t.id = c.to_tier_id"
        " WHERE c.membership_id = %(m)s ORDER BY c.id",
        {"m": membership.id},
    )
    return [(f, t, reason, total) for f, t, reason, total in rows]


async def held(db: Database, membership: MembershipRecord) -> str | None:
    found = await held_tiers_by_membership(db, OPERATOR, [membership.id])
    return found[membership.id].code if membership.id in found else None


async def total(db: Database, membership: MembershipRecord) -> Decimal:
    return (await standings_by_membership(db, OPERATOR, [membership.id]))[
        membership.id
    ].qualifying_total


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


class TestUpgrade:
    async def test_crossing_a_threshold_upgrades_on_that_event(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        assert await held(db, membership) == "regular"  # before any activity
        assert await qualify(db, membership, program, spend=999) == []
        assert await held(db, membership) == "regular"
        assert await qualify(db, membership, program, spend=1) == [TierMove("regular", "gold")]
        assert await held(db, membership) == "gold"
        assert await history(db, membership) == [("regular", "gold", "qualified", 1000)]
        events = await db.fetch_all(
            "SELECT merchant_id, member_id, payload FROM outbox_event WHERE topic = 'tier.changed'"
        )
        assert len(events) == 1
        merchant_id, member_id, payload = events[0]
        assert (merchant_id, member_id) == (program.merchant_id, membership.member_id)
        assert payload | {"qualifying_total": None} == {
            "membership_id": membership.id, "program_id": program.id, "from": "regular",
            "from_rank": 0, "to": "gold", "to_rank": 1, "reason": "qualified",
            "qualifying_total": None, "ladder_version": 1,
        }  # fmt: skip

    async def test_a_big_purchase_skips_a_tier(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        assert await qualify(db, membership, program, spend=Decimal("5000.50")) == [
            TierMove("regular", "platinum")
        ]
        assert await history(db, membership) == [
            ("regular", "platinum", "qualified", Decimal("5000.50"))
        ]

    async def test_points_basis_counts_points_not_spend(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, basis=TierBasis.POINTS)
        membership = await make_membership(db, program)
        assert await qualify(db, membership, program, spend=100_000, points=999) == []
        assert await qualify(db, membership, program, spend=1, points=1) == [
            TierMove("regular", "gold")
        ]

    async def test_rolling_window_forgets_old_activity(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, window_days=365)
        membership = await make_membership(db, program)
        assert await qualify(db, membership, program, spend=4000, occurred_at=days_ago(366)) == []
        assert await qualify(db, membership, program, spend=600, occurred_at=days_ago(364)) == []
        assert await total(db, membership) == 600
        assert await qualify(db, membership, program, spend=400) == [TierMove("regular", "gold")]
        assert await history(db, membership) == [("regular", "gold", "qualified", 1000)]

    async def test_a_refund_lowers_the_total_but_does_not_downgrade(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        bought_at = days_ago(3)
        await qualify(db, membership, program, spend=6000, points=6000, occurred_at=bought_at)
        refunded = await qualify(
            db, membership, program, spend=-5500, points=-5500, occurred_at=bought_at
        )
        assert refunded == []
        assert (await held(db, membership), await total(db, membership)) == (
            "platinum",
            Decimal(500),
        )
        assert await history(db, membership) == [("regular", "platinum", "qualified", 6000)]
        # Qualifying again on top of the refund counts from the lowered total.
        assert await qualify(db, membership, program, spend=4499) == []

    async def test_activity_before_the_ladder_counts_once_there_is_one(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        assert await qualify(db, membership, program, spend=900) == []
        assert await held(db, membership) is None  # no tiers at all
        await make_ladder(db, program)
        assert await held(db, membership) == "regular"
        assert await qualify(db, membership, program, spend=100) == [TierMove("regular", "gold")]


class TestRecording:
    async def test_once_per_membership_and_transaction(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        movement = await give_points(db, membership, program, 5)

        async def record() -> list[TierMove]:
            return await record_activity(
                db, membership_id=membership.id, transaction_id=movement.transaction_id,
                occurred_at=datetime.now(UTC), spend=Decimal(700),
            )  # fmt: skip

        assert await record() == []
        assert await record() == []  # a retry: not counted twice
        assert await total(db, membership) == 700

    async def test_nothing_to_count_is_not_recorded(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        assert await qualify(db, membership, program) == []
        rows = await db.fetch_all("SELECT count(*) FROM qualifying_activity")
        assert rows == [(0,)]

    async def test_unknown_membership(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        movement = await give_points(db, membership, program, 5)
        with pytest.raises(NotFound):
            await record_activity(db, membership_id=10**9, transaction_id=movement.transaction_id,
                                  occurred_at=datetime.now(UTC), spend=Decimal(1))  # fmt: skip

    async def test_activity_is_append_only(self, db: Database) -> None:
        import psycopg

        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=2000)
        for statement in ("UPDATE qualifying_activity SET spend = 0", "DELETE FROM tier_change"):
            with pytest.raises(psycopg.Error) as refused:
                await db.fetch_all(statement)
            assert refused.value.sqlstate == "LA500"


async def test_concurrent_activity_upgrades_once_per_tier_crossed(db: Database) -> None:
    """20 purchases of 300 at once: 1,200 crosses gold (1,000), 5,100 crosses platinum."""
    program = await make_program(db)
    await make_ladder(db, program)
    membership = await make_membership(db, program)
    movements = [await give_points(db, membership, program, 1) for _ in range(20)]
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(
            record_activity(
                db,
                membership_id=membership.id,
                transaction_id=movement.transaction_id,
                occurred_at=now,
                spend=Decimal(300),
            )
            for movement in movements
        )
    )
    moves = [move for result in results for move in result]
    assert sorted(moves, key=lambda m: m.tier_from) == [
        TierMove("gold", "platinum"), TierMove("regular", "gold")
    ]  # fmt: skip
    assert await history(db, membership) == [
        ("regular", "gold", "qualified", 1200),
        ("gold", "platinum", "qualified", 5100),
    ]
    assert (await held(db, membership), await total(db, membership)) == ("platinum", Decimal(6000))
    events = await db.fetch_all("SELECT count(*) FROM outbox_event WHERE topic = 'tier.changed'")
    assert events == [(2,)]
