"""The tier review job: grace periods, downgrades, cancellations, new ladder versions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alliance.db.engine import Database
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from alliance.tiers.ladder import TierInput
from alliance.tiers.queries import standings_by_membership
from alliance.tiers.review import review_tiers
from alliance.tiers.service import TierMove
from tests.factories import OPERATOR, make_ladder, make_membership, make_program, qualify
from tests.tiers.test_activity import days_ago, held, history

REGULAR = TierInput("regular", "普通", Decimal(0))


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def pending_until(db: Database, membership: MembershipRecord) -> datetime | None:
    return (await standings_by_membership(db, OPERATOR, [membership.id]))[
        membership.id
    ].downgrade_at


async def fallen_platinum(db: Database, program: ProgramRecord) -> MembershipRecord:
    """A platinum member whose refund left 4,000 of the 5,000 platinum needs."""
    membership = await make_membership(db, program)
    await qualify(db, membership, program, spend=6000)
    await qualify(db, membership, program, spend=-2000)
    assert await held(db, membership) == "platinum"
    return membership


class TestGraceAndDowngrade:
    async def test_grace_starts_then_the_member_moves_to_the_tier_still_reached(
        self, db: Database
    ) -> None:
        program = await make_program(db)
        await make_ladder(db, program, window_days=365, grace_days=30)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=4000, occurred_at=days_ago(300))
        await qualify(db, membership, program, spend=1500, occurred_at=days_ago(10))
        assert await held(db, membership) == "platinum"
        review = await review_tiers(db)
        assert (review.reviewed, review.moved, review.graced) == (1, 0, 0)

        # 70 days on, the 4,000 has left the window: 1,500 is short of platinum's 5,000.
        started = later(70)
        review = await review_tiers(db, now=started)
        assert (review.moved, review.graced) == (0, 1)
        assert await pending_until(db, membership) == started + timedelta(days=30)
        assert await held(db, membership) == "platinum"
        for moment in (started, started + timedelta(days=29)):  # nothing more to do yet
            review = await review_tiers(db, now=moment)
            assert (review.moved, review.graced, review.cancelled) == (0, 0, 0)

        review = await review_tiers(db, now=started + timedelta(days=30))
        assert (review.moved, review.graced) == (1, 0)
        assert await held(db, membership) == "gold"  # not all the way down: 1,500 reaches gold
        assert (await history(db, membership))[-1] == ("platinum", "gold", "downgraded", 1500)
        assert await pending_until(db, membership) is None
        again = await review_tiers(db, now=started + timedelta(days=30))
        assert (again.moved, again.graced) == (0, 0)
        assert len(await history(db, membership)) == 3  # regular→gold→platinum→gold

    async def test_requalifying_cancels_the_pending_downgrade(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=30)
        membership = await fallen_platinum(db, program)
        assert (await review_tiers(db)).graced == 1
        assert await pending_until(db, membership) is not None
        # The event that brings the total back cancels at once (no tier change).
        assert await qualify(db, membership, program, spend=1000) == []
        assert await pending_until(db, membership) is None
        review = await review_tiers(db, now=later(31))
        assert (review.moved, review.graced) == (0, 0)
        assert await held(db, membership) == "platinum"

    async def test_without_requalifying_the_downgrade_follows_the_grace(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=30)
        membership = await fallen_platinum(db, program)
        await review_tiers(db)
        assert (await review_tiers(db, now=later(29))).moved == 0
        assert (await review_tiers(db, now=later(31))).moved == 1
        assert (await history(db, membership))[-1] == ("platinum", "gold", "downgraded", 4000)

    async def test_no_grace_moves_down_at_the_first_review(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=0)
        membership = await fallen_platinum(db, program)
        review = await review_tiers(db)
        assert (review.moved, review.graced) == (1, 0)
        assert await held(db, membership) == "gold"

    async def test_entry_tier_members_are_not_reviewed(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        for _ in range(3):
            await qualify(db, await make_membership(db, program), program, spend=10)
        review = await review_tiers(db, now=later(400))
        assert (review.reviewed, review.batches) == (0, 1)


class TestNewLadderVersion:
    async def test_dropped_code_is_carried_to_the_tier_of_its_rank(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        platinum = await fallen_platinum(db, program)
        gold = await make_membership(db, program)
        await qualify(db, gold, program, spend=1500)
        await make_ladder(db, program, tiers=(
            REGULAR, TierInput("silver", "白银", Decimal(500)),
            TierInput("gold", "黄金", Decimal(2000)),
        ))  # fmt: skip
        # Read now, the members already stand on the new version...
        assert (await held(db, platinum), await held(db, gold)) == ("gold", "gold")
        review = await review_tiers(db)
        # ...and the review records it: platinum's code is gone, rank 2 is gold now. Gold
        # keeps its code, and misses its new threshold: its grace period starts.
        assert (review.moved, review.graced) == (1, 1)
        assert (await history(db, platinum))[-1] == ("platinum", "gold", "ladder_changed", 4000)
        assert await pending_until(db, gold) is not None
        assert await history(db, gold) == [("regular", "gold", "qualified", 1500)]
        again = await review_tiers(db)
        assert (again.moved, again.graced) == (0, 0)

    async def test_the_next_event_carries_a_dropped_code_too(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await fallen_platinum(db, program)
        await make_ladder(db, program, tiers=(REGULAR, TierInput("gold", "黄金", Decimal(1000))))
        assert await qualify(db, membership, program, spend=1) == [TierMove("platinum", "gold")]
        assert (await history(db, membership))[-1] == ("platinum", "gold", "ladder_changed", 4001)

    async def test_a_lowered_bar_lifts_members_on_review(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=3000)
        await make_ladder(db, program, tiers=(
            REGULAR, TierInput("gold", "黄金", Decimal(1000)),
            TierInput("platinum", "白金", Decimal(2500)),
        ))  # fmt: skip
        assert (await review_tiers(db)).moved == 1
        assert (await history(db, membership))[-1] == ("gold", "platinum", "ladder_changed", 3000)

    async def test_a_lowered_bar_cancels_a_pending_downgrade(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await fallen_platinum(db, program)
        assert (await review_tiers(db)).graced == 1
        await make_ladder(db, program, tiers=(
            REGULAR, TierInput("gold", "黄金", Decimal(1000)),
            TierInput("platinum", "白金", Decimal(4000)),
        ))  # fmt: skip
        review = await review_tiers(db)
        assert (review.cancelled, review.moved) == (1, 0)
        assert await pending_until(db, membership) is None

    async def test_a_first_ladder_places_members_with_earlier_activity(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=1200)
        await make_ladder(db, program)
        assert (await review_tiers(db)).moved == 1
        assert await history(db, membership) == [("regular", "gold", "ladder_changed", 1200)]


class TestRuns:
    async def test_many_memberships_in_small_batches(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=0)
        members = [await fallen_platinum(db, program) for _ in range(7)]
        review = await review_tiers(db, batch_size=2)
        assert (review.reviewed, review.moved, review.batches) == (7, 7, 4)
        for membership in members:
            assert await held(db, membership) == "gold"

    async def test_concurrent_runs_move_each_member_once(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=0)
        members = [await fallen_platinum(db, program) for _ in range(6)]
        runs = await asyncio.gather(*(review_tiers(db, batch_size=2) for _ in range(4)))
        assert sum(run.moved for run in runs) == 6
        for membership in members:
            assert [change[2] for change in await history(db, membership)] == [
                "qualified", "downgraded"
            ]  # fmt: skip

    async def test_a_busy_member_waits_for_the_next_run(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program, grace_days=0)
        busy = await fallen_platinum(db, program)
        free = await fallen_platinum(db, program)
        async with db.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM account WHERE membership_id = %(m)s FOR UPDATE", {"m": busy.id}
            )
            review = await review_tiers(db)
        assert (review.moved, review.busy) == (1, 1)
        assert (await held(db, busy), await held(db, free)) == ("platinum", "gold")
        review = await review_tiers(db)
        assert (review.moved, review.busy) == (1, 0)
        assert await held(db, busy) == "gold"
