"""Reading ladders, memberships' tiers, their history and progress.

A program's ladder is public program information, like its earning rules. A membership's
tier, history and standing are visible to whoever may see the membership
(`readable_memberships`): the operator and auditors, the merchant of its program, the
member themself. What a membership holds is computed by the same SQL functions that
change it (migrations/sql/0004_tiers.sql), so a read never disagrees with the next event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, Table, any_, func, select, true
from sqlalchemy.sql import FromClause

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.compiled import Compiled, actor_params, actor_variant
from alliance.db.engine import Database
from alliance.db.paging import Page, fetch_pages_by_parent, ids_param, paged_by_parent, past_cursor
from alliance.members.models import Membership
from alliance.members.queries import readable_memberships
from alliance.programs.models import Program
from alliance.tiers.ladder import Ladder, TierRecord, plain
from alliance.tiers.models import MembershipTier, Tier, TierBasis, TierChange, TierLadder

ladder_table = TierLadder.__table__
tier_table = Tier.__table__
change_table = TierChange.__table__
membership_tier_table = MembershipTier.__table__
membership_table = Membership.__table__
program_table = Program.__table__


def tier_columns(tier: Table | FromClause, ladder: Table | FromClause) -> tuple[Any, ...]:
    """A `TierRecord`'s columns, of a tier and its ladder (either may be an alias)."""
    names = ("id", "ladder_id", "program_id", "code", "name", "rank", "threshold",
             "multiplier", "benefits")  # fmt: skip
    return (*(tier.c[name] for name in names), ladder.c.version)


TIER_COLUMNS = tier_columns(tier_table, ladder_table)
_TIER_WIDTH = len(TIER_COLUMNS)
_tiers = tier_table.join(ladder_table, ladder_table.c.id == tier_table.c.ladder_id)
_LADDER_COLUMNS = (
    ladder_table.c.id,
    ladder_table.c.version,
    ladder_table.c.basis,
    ladder_table.c.window_days,
    ladder_table.c.grace_days,
    ladder_table.c.created_at,
)


@dataclass(frozen=True, slots=True)
class TierChangeRecord:
    id: int
    membership_id: int
    from_tier: TierRecord
    """As the ladder version of the time had it."""
    to_tier: TierRecord
    reason: str
    qualifying_total: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TierStanding:
    """Where a membership stands now, on its program's current ladder."""

    membership_id: int
    held: TierRecord
    next: TierRecord | None
    """The next tier up; None at the top."""
    qualifying_total: Decimal
    window_start: datetime
    downgrade_at: datetime | None
    """When the grace period of a pending downgrade ends."""

    @property
    def needed_for_next(self) -> Decimal | None:
        if self.next is None:
            return None
        return max(Decimal(0), self.next.threshold - self.qualifying_total)


def ladder_select() -> Select[Any]:
    """Each program of `ids` with its current ladder's tiers, one row per tier (one row of
    NULLs when it has no ladder), by program and rank."""
    return (
        select(program_table.c.id, *_LADDER_COLUMNS, *TIER_COLUMNS[:-1])
        .select_from(
            program_table.outerjoin(
                ladder_table, ladder_table.c.id == func.tier_current_ladder(program_table.c.id)
            ).outerjoin(tier_table, tier_table.c.ladder_id == ladder_table.c.id)
        )
        .where(program_table.c.id == any_(ids_param()))
        .order_by(program_table.c.id, tier_table.c.rank)
    )


def ladders_from_rows(rows: Sequence[Sequence[Any]]) -> dict[int, Ladder | None]:
    """`ladder_select` rows as ladders per program (None: the program has no tiers)."""
    grouped: dict[int, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    ladders: dict[int, Ladder | None] = {}
    for program_id, found in grouped.items():
        ladder_id, version, basis, window_days, grace_days, created_at = found[0][1:7]
        if ladder_id is None:
            ladders[program_id] = None
            continue
        tiers = tuple(TierRecord.from_row((*row[7:], version)) for row in found)
        ladders[program_id] = Ladder(ladder_id, program_id, version, TierBasis(basis),
                                     window_days, grace_days, created_at, tiers)  # fmt: skip
    return ladders


_ladders = Compiled(ladder_select)
_tiers_by_id = Compiled(
    lambda: select(*TIER_COLUMNS).select_from(_tiers).where(tier_table.c.id == any_(ids_param()))
)
_tiers_of_program = Compiled(
    lambda after: paged_by_parent(
        lambda program_id: (
            select(*TIER_COLUMNS)
            .select_from(_tiers)
            .where(
                tier_table.c.ladder_id == func.tier_current_ladder(program_id),
                past_cursor(tier_table.c.rank, after),
            )
            .order_by(tier_table.c.rank)
        )
    )
)
_held = func.tier_held(
    func.tier_current_ladder(membership_table.c.program_id), membership_tier_table.c.tier_id
)
_held_tiers = Compiled(
    lambda role, bound: (
        select(membership_table.c.id, *TIER_COLUMNS)
        .select_from(
            membership_table.outerjoin(
                membership_tier_table,
                membership_tier_table.c.membership_id == membership_table.c.id,
            )
            .join(tier_table, tier_table.c.id == _held)
            .join(ladder_table, ladder_table.c.id == tier_table.c.ladder_id)
        )
        .where(membership_table.c.id == any_(ids_param()), readable_memberships(role, bound))
    )
)
_STANDING = ("ladder_id", "held_tier_id", "next_tier_id", "qualifying_total", "window_start",
             "downgrade_at")  # fmt: skip


def _standing_select(role: Role, bound: bool) -> Select[Any]:
    standing = (
        func.tier_standing(membership_table.c.id, func.now())
        .table_valued(*_STANDING)
        .lateral("standing")
    )
    held, following = tier_table.alias("held"), tier_table.alias("following")
    return (
        select(
            membership_table.c.id,
            standing.c.qualifying_total,
            standing.c.window_start,
            standing.c.downgrade_at,
            *tier_columns(held, ladder_table),
            *tier_columns(following, ladder_table),
        )
        .select_from(
            membership_table.join(standing, true())
            .join(ladder_table, ladder_table.c.id == standing.c.ladder_id)
            .join(held, held.c.id == standing.c.held_tier_id)
            .outerjoin(following, following.c.id == standing.c.next_tier_id)
        )
        .where(membership_table.c.id == any_(ids_param()), readable_memberships(role, bound))
    )


_standings = Compiled(_standing_select)
_from, _to = tier_table.alias("from_tier"), tier_table.alias("to_tier")
_from_ladder, _to_ladder = ladder_table.alias("from_ladder"), ladder_table.alias("to_ladder")
# Newest first: ids grow with time.
_history = Compiled(
    lambda role, bound, after: paged_by_parent(
        lambda membership_id: (
            select(
                change_table.c.id,
                change_table.c.membership_id,
                change_table.c.reason,
                change_table.c.qualifying_total,
                change_table.c.created_at,
                *tier_columns(_from, _from_ladder),
                *tier_columns(_to, _to_ladder),
            )
            .select_from(
                change_table.join(
                    membership_table, membership_table.c.id == change_table.c.membership_id
                )
                .join(_from, _from.c.id == change_table.c.from_tier_id)
                .join(_from_ladder, _from_ladder.c.id == _from.c.ladder_id)
                .join(_to, _to.c.id == change_table.c.to_tier_id)
                .join(_to_ladder, _to_ladder.c.id == _to.c.ladder_id)
            )
            .where(
                change_table.c.membership_id == membership_id,
                readable_memberships(role, bound),
                past_cursor(change_table.c.id, after, descending=True),
            )
            .order_by(change_table.c.id.desc())
        )
    )
)


async def load_ladders(db: Database, program_ids: Sequence[int]) -> dict[int, Ladder | None]:
    """Current ladders of existing programs (None: no tiers); unknown programs are absent."""
    return ladders_from_rows(await db.read(*_ladders.bind(ids=list(program_ids))))


async def ladders_by_program(
    db: Database, actor: Actor, program_ids: Sequence[int]
) -> dict[int, Ladder]:
    found = await load_ladders(db, program_ids)
    return {program_id: ladder for program_id, ladder in found.items() if ladder is not None}


async def tiers_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, TierRecord]:
    rows = await db.read(*_tiers_by_id.bind(ids=list(ids)))
    return {row[0]: TierRecord.from_row(row) for row in rows}


async def tier_pages_by_program(
    db: Database, actor: Actor, program_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[TierRecord]]:
    """The current ladder's tiers by rank (the cursor is the rank)."""
    query = _tiers_of_program.bind(after is not None, after=after)
    return await fetch_pages_by_parent(db, query, program_ids, first, TierRecord.from_row)


async def held_tiers_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int]
) -> dict[int, TierRecord]:
    """The tier each membership holds now; absent when its program has no tiers."""
    query = _held_tiers.bind(*actor_variant(actor), ids=list(membership_ids), **actor_params(actor))
    return {row[0]: TierRecord.from_row(row[1:]) for row in await db.read(*query)}


async def standings_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int]
) -> dict[int, TierStanding]:
    query = _standings.bind(*actor_variant(actor), ids=list(membership_ids), **actor_params(actor))
    return {row[0]: _standing(row) for row in await db.read(*query)}


async def tier_change_pages_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[TierChangeRecord]]:
    query = _history.bind(
        *actor_variant(actor), after is not None, after=after, **actor_params(actor)
    )
    return await fetch_pages_by_parent(db, query, membership_ids, first, _change)


def _standing(row: Any) -> TierStanding:
    membership_id, total, window_start, downgrade_at = row[:4]
    held = TierRecord.from_row(row[4 : 4 + _TIER_WIDTH])
    following = row[4 + _TIER_WIDTH :]
    return TierStanding(
        membership_id, held, None if following[0] is None else TierRecord.from_row(following),
        plain(total), window_start, downgrade_at,
    )  # fmt: skip


def _change(row: Any) -> TierChangeRecord:
    id, membership_id, reason, total, created_at = row[:5]
    from_tier = TierRecord.from_row(row[5 : 5 + _TIER_WIDTH])
    to_tier = TierRecord.from_row(row[5 + _TIER_WIDTH :])
    return TierChangeRecord(id, membership_id, from_tier, to_tier, reason, plain(total),
                            created_at)  # fmt: skip
