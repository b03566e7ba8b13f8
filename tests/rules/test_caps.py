"""Earning caps: per member per day / month / year, per rule and per program."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import InvalidInput
from alliance.rules.earning import preview_earn, record_purchase
from alliance.rules.engine import Cap, CapPeriod, Purchase
from alliance.rules.models import RuleKind
from alliance.rules.service import set_earning_policy
from alliance.rules.terms import TermsInput
from tests.factories import backdated_rule, make_membership, make_program, merchant_actor

DAY = CapPeriod.DAY


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def bought(amount: int, at: datetime) -> Purchase:
    return Purchase(Decimal(amount), at)


async def _setup(db: Database, *caps: Cap, rule_caps: tuple[Cap, ...] = ()):  # type: ignore[no-untyped-def]
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1), caps=rule_caps))  # fmt: skip
    if caps:
        await set_earning_policy(db, actor, program_id=program.id, caps=caps)
    membership = await make_membership(db, program)
    return program, actor, membership


async def _earn(db, actor, membership, order: str, amount: int, at: datetime):  # type: ignore[no-untyped-def]
    return await record_purchase(db, actor, membership_id=membership.id, order_id=order,
                                 purchase=bought(amount, at), currency="CNY")  # fmt: skip


class TestProgramCaps:
    async def test_a_capped_earn_posts_what_fits_and_says_what_was_cut(self, db: Database) -> None:
        _, actor, membership = await _setup(db, Cap(DAY, 100))
        at = ago(minutes=5)
        first = await _earn(db, actor, membership, "o1", 80, at)
        second = await _earn(db, actor, membership, "o2", 50, at)
        third = await _earn(db, actor, membership, "o3", 10, at)

        assert first.movement is not None
        assert first.movement.points == 80
        assert second.movement is not None
        assert second.movement.points == 20
        cut = [line for line in second.breakdown.contributions if line.kind == "cap"]
        assert [(c.code, c.points) for c in cut] == [("program", -30)]
        assert second.breakdown.points == sum(c.points for c in second.breakdown.contributions)
        assert third.movement is None
        assert third.breakdown.points == 0

    async def test_days_are_cut_in_the_alliance_time_zone(self, db: Database) -> None:
        """23:59 and 00:01 in Shanghai are two days although UTC says one; 01:00 and
        09:00 in Shanghai are one day although UTC says two."""
        _, actor, membership = await _setup(db, Cap(DAY, 100))
        day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)  # fmt: skip
        before_midnight = day + timedelta(hours=15, minutes=59)  # 23:59 in Shanghai
        after_midnight = day + timedelta(hours=16, minutes=1)  # 00:01 next day in Shanghai
        a = await _earn(db, actor, membership, "a", 100, before_midnight)
        b = await _earn(db, actor, membership, "b", 100, after_midnight)
        assert a.breakdown.points == b.breakdown.points == 100

        next_day_later = day + timedelta(days=1, hours=1)  # 09:00 Shanghai, same day as b
        c = await _earn(db, actor, membership, "c", 100, next_day_later)
        assert c.movement is None
        assert c.breakdown.points == 0

    async def test_month_and_year_caps_hold_together(self, db: Database) -> None:
        caps = (Cap(DAY, 1000), Cap(CapPeriod.MONTH, 150), Cap(CapPeriod.YEAR, 10_000))
        _, actor, membership = await _setup(db, *caps)
        at = ago(minutes=1)
        await _earn(db, actor, membership, "m1", 100, at)
        second = await _earn(db, actor, membership, "m2", 100, at)
        assert second.breakdown.points == 50
        cap_line = next(c for c in second.breakdown.contributions if c.kind == "cap")
        assert "150 per month" in cap_line.detail

    async def test_preview_shows_the_cap_and_counts_nothing(self, db: Database) -> None:
        _, actor, membership = await _setup(db, Cap(DAY, 100))
        at = ago(minutes=2)
        await _earn(db, actor, membership, "p1", 70, at)
        for _ in range(2):
            preview = await preview_earn(db, actor, membership_id=membership.id,
                                         purchase=bought(50, at), currency="CNY")  # fmt: skip
            assert preview.points == 30
        actual = await _earn(db, actor, membership, "p2", 50, at)
        assert actual.breakdown == preview

    async def test_caps_are_never_exceeded_by_concurrent_earns(self, db: Database) -> None:
        _, actor, membership = await _setup(db, Cap(DAY, 500))
        at = ago(minutes=3)
        results = await asyncio.gather(
            *(_earn(db, actor, membership, f"c{n}", 37, at) for n in range(50))
        )
        posted = sum(r.movement.points for r in results if r.movement is not None)
        assert posted == 500
        counted = await db.fetch_one(
            "SELECT points FROM earn_counter WHERE scope = 'program' AND period = 'day'", {}
        )
        assert counted is not None
        assert counted[0] == 500

    async def test_invalid_caps_are_refused(self, db: Database) -> None:
        program = await make_program(db)
        actor = merchant_actor(program.merchant_id)
        for caps, field in (
            ((Cap(DAY, 0),), "points"),
            ((Cap(DAY, 10), Cap(DAY, 20)), "caps"),
        ):
            with pytest.raises(InvalidInput) as refused:
                await set_earning_policy(db, actor, program_id=program.id, caps=caps)
            assert refused.value.field == (field,)


class TestRuleCaps:
    async def test_a_rule_cap_cuts_only_that_rule(self, db: Database) -> None:
        program, actor, membership = await _setup(db)
        await backdated_rule(db, program, "bonus", RuleKind.PROMOTION,
                             TermsInput(bonus_points=50, caps=(Cap(DAY, 60),)))  # fmt: skip
        at = ago(minutes=4)
        first = await _earn(db, actor, membership, "r1", 10, at)
        second = await _earn(db, actor, membership, "r2", 10, at)
        assert first.breakdown.points == 60
        assert second.breakdown.points == 20
        cut = [(c.code, c.points) for c in second.breakdown.contributions if c.kind == "cap"]
        assert cut == [("bonus", -40)]

    async def test_a_program_cut_is_taken_from_the_last_rules_first(self, db: Database) -> None:
        """The bonus lost to the program cap is not counted against the bonus's own cap."""
        program, actor, membership = await _setup(db, Cap(DAY, 100))
        await backdated_rule(db, program, "bonus", RuleKind.PROMOTION,
                             TermsInput(bonus_points=50, caps=(Cap(DAY, 1000),)))  # fmt: skip
        result = await _earn(db, actor, membership, "x", 80, ago(minutes=1))
        assert result.breakdown.points == 100
        rows = await db.fetch_all("SELECT scope, points FROM earn_counter ORDER BY scope", {})
        assert [tuple(r) for r in rows] == [("program", 100), ("rule:bonus", 20)]


async def test_earns_without_caps_count_nothing(db: Database) -> None:
    _, actor, membership = await _setup(db)
    result = await _earn(db, actor, membership, "free", 999, ago(minutes=1))
    assert result.breakdown.points == 999
    async with db.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM earn_counter")) == 0
