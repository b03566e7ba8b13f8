"""Managing tier ladders, the per-process ladder cache, and recording qualifying activity.

A ladder version is in force as soon as it is committed: the database functions that
upgrade on events and the review job read the current version each time. The earning
side reads ladders through `tier_ladder`, this process's copy, which another process's
change reaches within `CACHE_TTL` seconds (and this process's own change at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import InvalidInput, NotFound
from alliance.programs.models import Program
from alliance.tiers.ladder import Ladder, TierInput, check_ladder
from alliance.tiers.models import Tier, TierBasis, TierLadder
from alliance.tiers.queries import ladder_select, ladders_from_rows, load_ladders

CACHE_TTL = 2.0
"""Seconds a process trusts its copy of a program's ladder."""
_CACHE_PROGRAMS = 1000


async def set_tier_ladder(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    basis: TierBasis,
    window_days: int,
    grace_days: int,
    tiers: Sequence[TierInput],
) -> Ladder:
    """A new version of the program's tier ladder, listed from the entry tier up.

    Earlier versions stay as they were, so recorded tier changes keep reading as they
    did. Members are carried onto the new version by tier code, on their next event or
    review (see `tier_held`). Setting the ladder in force again writes nothing.
    """
    actor.require(Role.MERCHANT)
    checked = check_ladder(basis, window_days, grace_days, tiers)
    async with db.transaction() as session:
        # FOR NO KEY UPDATE: one ladder write per program at a time, without blocking the
        # movements whose inserts reference the program (their key checks take KEY SHARE).
        program = await session.get(Program, program_id, with_for_update={"key_share": True})
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        previous = await _current_ladder(session, program_id)
        if previous is not None and previous.same_as(basis, window_days, grace_days, checked):
            return previous
        ladder_id = await session.scalar(
            insert(TierLadder)
            .values(program_id=program_id, version=1 if previous is None else previous.version + 1,
                    basis=basis.value, window_days=window_days, grace_days=grace_days,
                    created_by=actor.subject)
            .returning(TierLadder.id)
        )  # fmt: skip
        await session.execute(
            insert(Tier),
            [{"ladder_id": ladder_id, "program_id": program_id, "code": tier.code,
              "name": tier.name, "rank": rank, "threshold": tier.threshold,
              "multiplier": tier.multiplier, "benefits": list(tier.benefits)}
             for rank, tier in enumerate(checked)],
        )  # fmt: skip
        ladder = await _current_ladder(session, program_id)
        assert ladder is not None, "the version just written is the one in force"
        await record_audit(
            session,
            actor,
            action="tier_ladder.version",
            target=f"program:{program_id}",
            before=None if previous is None else previous.as_json(),
            after=ladder.as_json(),
        )
    _forget(program_id)
    return ladder


async def _current_ladder(session: AsyncSession, program_id: int) -> Ladder | None:
    rows = (await session.execute(ladder_select(), {"ids": [program_id]})).all()
    return ladders_from_rows(rows).get(program_id)


# -- the ladder in force, cached per process -------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cached:
    ladder: Ladder | None
    loaded_at: float


_cache: OrderedDict[int, _Cached] = OrderedDict()
_loading: dict[int, asyncio.Future[Ladder | None]] = {}


def forget_cached() -> None:
    """Drop the per-process cache: for when the database is replaced underneath (tests
    that truncate and reuse ids, a restore)."""
    _cache.clear()
    _loading.clear()


def _forget(program_id: int) -> None:
    # A load already under way may have read the old version: it is not stored, and
    # callers from now on start a fresh one.
    _cache.pop(program_id, None)
    _loading.pop(program_id, None)


async def tier_ladder(db: Database, program_id: int) -> Ladder | None:
    """The program's ladder in force (None: it has no tiers), with each tier's earning
    multiplier, from this process's copy while it is fresh. NotFound for no such program.

    `ladder.multiplier(code, rank)` is the multiplier of a member whose tier is (code,
    rank), e.g. as `held_tiers_by_membership` reports it.
    """
    cached = _cache.get(program_id)
    if cached is not None and time.monotonic() - cached.loaded_at < CACHE_TTL:
        return cached.ladder
    # One read per program at a time: callers that find the copy stale together wait
    # for the same read.
    pending = _loading.get(program_id)
    if pending is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():  # the caller reading it went away: read it here
                return await tier_ladder(db, program_id)
            raise
    future: asyncio.Future[Ladder | None] = asyncio.get_running_loop().create_future()
    _loading[program_id] = future
    try:
        found = await load_ladders(db, [program_id])
        if program_id not in found:
            raise NotFound("program not found", field=("programId",))
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as error:
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    else:
        ladder = found[program_id]
        future.set_result(ladder)
        if _loading.get(program_id) is future:  # not invalidated while it was read
            _cache[program_id] = _Cached(ladder, time.monotonic())
            _cache.move_to_end(program_id)
            while len(_cache) > _CACHE_PROGRAMS:
                _cache.popitem(last=False)
        return ladder
    finally:
        if _loading.get(program_id) is future:
            del _loading[program_id]


# -- qualifying activity ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierMove:
    tier_from: str
    tier_to: str


_RECORD = (
    "SELECT tier_from, tier_to FROM tier_record_activity(%(membership)s::bigint,"
    " %(transaction)s::bigint, %(occurred_at)s, %(spend)s::numeric, %(points)s::bigint)"
)


async def record_activity(
    db: Database,
    *,
    membership_id: int,
    transaction_id: int,
    occurred_at: datetime,
    spend: Decimal = Decimal(0),
    points: int = 0,
) -> list[TierMove]:
    """What a ledger transaction adds to a membership's qualifying total (negative for a
    refund), and the upgrade it triggers, in a transaction of its own.

    The system's own step, not a use case: no actor. Ledger functions that move points on
    a purchase call `tier_record_activity` in their own transaction instead.
    """
    if occurred_at.tzinfo is None:
        raise InvalidInput("occurredAt needs a time zone", field=("occurredAt",))
    parameters = {"membership": membership_id, "transaction": transaction_id,
                  "occurred_at": occurred_at, "spend": spend, "points": points}  # fmt: skip
    try:
        rows = await db.fetch_all(_RECORD, parameters)
    except psycopg.Error as error:
        if error.sqlstate == "LA404":
            raise NotFound("membership not found", field=("membershipId",)) from None
        raise
    return [TierMove(*row) for row in rows]
