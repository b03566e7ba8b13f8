"""Tier ladders: validation, append-only versions, authorization, audit, the process cache."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from alliance.audit.models import AuditRecord
from alliance.db.engine import Database
from alliance.errors import Forbidden, InvalidInput, NotFound
from alliance.tiers import service
from alliance.tiers.ladder import TierInput, check_ladder
from alliance.tiers.models import TierBasis
from alliance.tiers.service import set_tier_ladder, tier_ladder
from tests.factories import (
    OPERATOR,
    STANDARD_TIERS,
    make_ladder,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)

REGULAR = TierInput("regular", "普通", Decimal(0))
GOLD = TierInput("gold", "黄金", Decimal(1000), Decimal("1.5"))


def _tiers(*thresholds: str, multiplier: str = "1") -> list[TierInput]:
    return [
        TierInput(f"t{rank}", f"Tier {rank}", Decimal(threshold), Decimal(multiplier))
        for rank, threshold in enumerate(thresholds)
    ]


# (what, basis, window, grace, tiers, field at fault)
INVALID: list[tuple[str, TierBasis, int, int, Any, tuple[str, ...]]] = [
    ("no tiers", TierBasis.SPEND, 365, 30, [], ("tiers",)),
    ("11 tiers", TierBasis.SPEND, 365, 30, _tiers(*(str(n * 10) for n in range(11))), ("tiers",)),
    ("entry threshold not 0", TierBasis.SPEND, 365, 30, _tiers("5", "10"),
     ("tiers", "0", "threshold")),
    ("thresholds equal", TierBasis.SPEND, 365, 30, _tiers("0", "100", "100"),
     ("tiers", "2", "threshold")),
    ("thresholds falling", TierBasis.SPEND, 365, 30, _tiers("0", "500", "300"),
     ("tiers", "2", "threshold")),
    ("negative threshold", TierBasis.SPEND, 365, 30, _tiers("0", "-1"),
     ("tiers", "1", "threshold")),
    ("cents on a points ladder", TierBasis.POINTS, 365, 30, _tiers("0", "100.5"),
     ("tiers", "1", "threshold")),
    ("sub-cent spend", TierBasis.SPEND, 365, 30, _tiers("0", "100.005"),
     ("tiers", "1", "threshold")),
    ("multiplier below 1", TierBasis.SPEND, 365, 30, _tiers("0", "100", multiplier="0.9"),
     ("tiers", "0", "multiplier")),
    ("multiplier above 10", TierBasis.SPEND, 365, 30, _tiers("0", multiplier="10.5"),
     ("tiers", "0", "multiplier")),
    ("duplicate code", TierBasis.SPEND, 365, 30,
     [REGULAR, GOLD, TierInput("gold", "Gold again", Decimal(2000))], ("tiers", "2", "code")),
    ("bad code", TierBasis.SPEND, 365, 30, [TierInput("Gold Tier", "x", Decimal(0))],
     ("tiers", "0", "code")),
    ("empty name", TierBasis.SPEND, 365, 30, [TierInput("regular", "  ", Decimal(0))],
     ("tiers", "0", "name")),
    ("control character in a benefit", TierBasis.SPEND, 365, 30,
     [TierInput("regular", "普通", Decimal(0), benefits=("ok", "bad\x00"))],
     ("tiers", "0", "benefits", "1")),
    ("21 benefits", TierBasis.SPEND, 365, 30,
     [TierInput("regular", "普通", Decimal(0), benefits=tuple(str(n) for n in range(21)))],
     ("tiers", "0", "benefits")),
    ("window 0 days", TierBasis.SPEND, 0, 30, [REGULAR], ("windowDays",)),
    ("window over 10 years", TierBasis.SPEND, 3651, 30, [REGULAR], ("windowDays",)),
    ("negative grace", TierBasis.SPEND, 365, -1, [REGULAR], ("graceDays",)),
    ("grace over a year", TierBasis.SPEND, 365, 366, [REGULAR], ("graceDays",)),
]  # fmt: skip


class TestValidation:
    @pytest.mark.parametrize(
        ("basis", "window_days", "grace_days", "tiers", "field"),
        [pytest.param(*case[1:], id=case[0]) for case in INVALID],
    )
    async def test_refused_with_the_field_at_fault(
        self,
        db: Database,
        basis: TierBasis,
        window_days: int,
        grace_days: int,
        tiers: list[TierInput],
        field: tuple[str, ...],
    ) -> None:
        program = await make_program(db)
        with pytest.raises(InvalidInput) as refused:
            await set_tier_ladder(
                db, merchant_actor(program.merchant_id), program_id=program.id, basis=basis,
                window_days=window_days, grace_days=grace_days, tiers=tiers,
            )  # fmt: skip
        assert refused.value.field == field
        assert await tier_ladder(db, program.id) is None  # nothing was written

    def test_ten_tiers_and_edges_are_accepted(self) -> None:
        tiers = _tiers(*(str(n * 10) for n in range(10)), multiplier="10")
        checked = check_ladder(TierBasis.POINTS, 3650, 0, tiers)
        assert [tier.threshold for tier in checked] == [Decimal(n * 10) for n in range(10)]

    def test_text_is_cleaned(self) -> None:
        (tier,) = check_ladder(
            TierBasis.SPEND, 1, 365, [TierInput("regular", " 普通 ", Decimal(0), benefits=(" a ",))]
        )
        assert (tier.name, tier.benefits) == ("普通", ("a",))


class TestVersions:
    async def test_each_change_is_a_new_version_and_history_stays(self, db: Database) -> None:
        program = await make_program(db)
        first = await make_ladder(db, program)
        assert (first.version, [t.code for t in first.tiers]) == (
            1, ["regular", "gold", "platinum"]
        )  # fmt: skip
        again = await make_ladder(db, program)
        assert again == first  # the ladder in force, set again: nothing written
        second = await make_ladder(db, program, tiers=(REGULAR, GOLD), grace_days=7)
        assert (second.version, second.grace_days, len(second.tiers)) == (2, 7, 2)
        assert {t.id for t in second.tiers}.isdisjoint({t.id for t in first.tiers})
        rows = await db.fetch_all(
            "SELECT l.version, t.code, t.threshold FROM tier t JOIN tier_ladder l"
            " ON l.id = t.ladder_id WHERE t.program_id = %(p)s ORDER BY l.version, t.rank",
            {"p": program.id},
        )
        assert [(v, c, int(t)) for v, c, t in rows] == [
            (1, "regular", 0), (1, "gold", 1000), (1, "platinum", 5000),
            (2, "regular", 0), (2, "gold", 1000),
        ]  # fmt: skip

    async def test_ladders_are_append_only(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        for statement in ("UPDATE tier SET multiplier = 3", "DELETE FROM tier_ladder"):
            with pytest.raises(psycopg.Error) as refused:
                await db.fetch_all(statement)
            assert refused.value.sqlstate == "LA500"

    async def test_each_version_is_audited(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        await make_ladder(db, program, tiers=(REGULAR, GOLD))
        async with db.autocommit() as conn:
            audits = (
                await conn.execute(
                    select(AuditRecord.actor, AuditRecord.before, AuditRecord.after)
                    .where(AuditRecord.action == "tier_ladder.version")
                    .order_by(AuditRecord.id)
                )
            ).all()
        assert (audits[0].before, audits[0].after["version"]) == (None, 1)
        assert audits[1].before["version"] == 1
        assert [t["code"] for t in audits[1].after["tiers"]] == ["regular", "gold"]
        assert audits[1].actor == f"client:test-merchant-{program.merchant_id}"


class TestAuthorization:
    async def test_only_the_programs_merchant_sets_its_ladder(self, db: Database) -> None:
        program = await make_program(db)
        other = await make_program(db)
        membership = await make_membership(db, program)
        arguments: dict[str, Any] = {"program_id": program.id, "basis": TierBasis.SPEND,
                                     "window_days": 365, "grace_days": 30,
                                     "tiers": STANDARD_TIERS}  # fmt: skip
        with pytest.raises(NotFound):
            await set_tier_ladder(db, merchant_actor(other.merchant_id), **arguments)
        for actor in (OPERATOR, member_actor(membership, program.merchant_id)):
            with pytest.raises(Forbidden):
                await set_tier_ladder(db, actor, **arguments)
        with pytest.raises(NotFound):
            await set_tier_ladder(
                db, merchant_actor(program.merchant_id), **(arguments | {"program_id": 10**9})
            )
        assert await tier_ladder(db, program.id) is None


class TestLadderCache:
    async def test_unknown_program_and_program_without_tiers(self, db: Database) -> None:
        program = await make_program(db)
        assert await tier_ladder(db, program.id) is None
        with pytest.raises(NotFound):
            await tier_ladder(db, 10**9)

    async def test_a_change_in_this_process_is_seen_at_once(self, db: Database) -> None:
        program = await make_program(db)
        assert await tier_ladder(db, program.id) is None  # cached: no ladder
        await make_ladder(db, program)
        ladder = await tier_ladder(db, program.id)
        assert ladder is not None
        assert ladder.multiplier("gold") == Decimal("1.5")
        await make_ladder(
            db, program, tiers=(REGULAR, TierInput("gold", "金", Decimal(9), Decimal(3)))
        )
        changed = await tier_ladder(db, program.id)
        assert changed is not None
        assert (changed.version, changed.multiplier("gold")) == (2, Decimal(3))

    async def test_another_process_change_arrives_within_the_ttl(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        assert (await tier_ladder(db, program.id)).version == 1  # type: ignore[union-attr]
        # Another process writes version 2: this process is not told.
        await db.fetch_all(
            "WITH l AS (INSERT INTO tier_ladder (program_id, version, basis, window_days,"
            " grace_days, created_by) VALUES (%(p)s, 2, 'spend', 365, 30, 'elsewhere')"
            " RETURNING id) INSERT INTO tier (ladder_id, program_id, code, name, rank,"
            " threshold, multiplier) SELECT id, %(p)s, 'regular', 'r', 0, 0, 1 FROM l"
            " RETURNING id",
            {"p": program.id},
        )
        assert (await tier_ladder(db, program.id)).version == 1  # type: ignore[union-attr]
        later = time.monotonic() + service.CACHE_TTL
        monkeypatch.setattr(service.time, "monotonic", lambda: later)
        assert (await tier_ladder(db, program.id)).version == 2  # type: ignore[union-attr]

    async def test_callers_finding_it_stale_together_read_once(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        service.forget_cached()
        with db.count_statements() as counter:
            ladders = await asyncio.gather(*(tier_ladder(db, program.id) for _ in range(20)))
        assert counter.count == 1
        assert len({id(ladder) for ladder in ladders}) == 1

    async def test_multiplier_of_a_tier_carried_onto_a_new_version(self, db: Database) -> None:
        program = await make_program(db)
        await make_ladder(db, program)
        ladder = await make_ladder(db, program, tiers=(
            REGULAR, TierInput("silver", "白银", Decimal(300), Decimal("1.2")),
            TierInput("gold", "黄金", Decimal(1000), Decimal("1.8")),
        ))  # fmt: skip
        assert ladder.multiplier("gold", 1) == Decimal("1.8")  # the code, wherever it is
        assert ladder.multiplier("platinum", 2) == Decimal("1.8")  # dropped: rank 2 stands
        assert ladder.multiplier("diamond", 7) == Decimal("1.8")
        assert ladder.multiplier(None) == Decimal(1)


async def test_python_and_sql_carry_tiers_onto_a_new_version_alike(db: Database) -> None:
    """`Ladder.held` (the earning side's lookup) mirrors the SQL function `tier_held`."""
    program = await make_program(db)
    old = await make_ladder(db, program, tiers=(
        REGULAR, TierInput("silver", "白银", Decimal(100)), GOLD,
        TierInput("platinum", "白金", Decimal(5000)), TierInput("diamond", "钻石", Decimal(9000)),
    ))  # fmt: skip
    new = await make_ladder(db, program, tiers=(
        TierInput("basic", "基础", Decimal(0)), GOLD, TierInput("silver", "白银", Decimal(2000)),
    ))  # fmt: skip
    for given in (None, *old.tiers):
        row = await db.fetch_one(
            "SELECT code FROM tier WHERE id = tier_held(%(ladder)s, %(given)s)",
            {"ladder": new.id, "given": None if given is None else given.id},
        )
        assert row is not None
        expected = new.held(None) if given is None else new.held(given.code, given.rank)
        assert row[0] == expected.code, given


async def test_sql_ladder_reads_match_what_was_written(db: Database) -> None:
    program = await make_program(db)
    ladder = await make_ladder(db, program, basis=TierBasis.POINTS, window_days=90)
    async with db.autocommit() as conn:
        basis = await conn.scalar(text("SELECT basis FROM tier_ladder WHERE id = :id"),
                                  {"id": ladder.id})  # fmt: skip
    assert basis == "points"
    assert (await tier_ladder(db, program.id)) == ladder
