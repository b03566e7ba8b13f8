"""Managing earning rules, and earning points by them.

Rule versions take effect at least `LEAD` ahead of the moment they are written, and
each process reloads a program's versions when its copy is older than `CACHE_TTL`
(< LEAD). So every process knows a version before it takes effect: earns apply
exactly the versions in force at the purchase's time, without reading the rules
from the database on every earn.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.compiled import Compiled
from alliance.db.engine import Database
from alliance.db.errors import constraint_name
from alliance.errors import AlreadyExists, InvalidInput, NotFound
from alliance.programs.models import Program
from alliance.rules.engine import (
    ActionRule,
    Breakdown,
    Cap,
    Promotion,
    PurchaseRule,
    Stacking,
)
from alliance.rules.models import EarningRule, RuleKind
from alliance.rules.terms import (
    TermsInput,
    caps_json,
    load_action_rule,
    load_promotion,
    load_purchase_rule,
    terms_json,
)
from alliance.validation import clean_code, clean_text

LEAD = timedelta(seconds=5)
"""How far ahead of its writing a rule version takes effect, at the earliest."""
CACHE_TTL = 2.0
"""Seconds a process trusts its copy of a program's rule versions (must be < LEAD)."""

assert timedelta(seconds=CACHE_TTL) < LEAD


@dataclass(frozen=True, slots=True)
class RuleRecord:
    id: int
    program_id: int
    code: str
    version: int
    kind: str
    name: str
    params: dict[str, Any]
    priority: int
    status: str
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime


_rule_columns = [EarningRule.__table__.c[name] for name in RuleRecord.__slots__]


async def _program_of_merchant(db: Database, actor: Actor, program_id: int) -> Program:
    async with db.transaction() as session:
        program = await session.get(Program, program_id)
    if program is None or program.merchant_id != actor.merchant_id:
        raise NotFound("program not found", field=("programId",))
    return program


def _check_window(valid_from: datetime | None, valid_until: datetime | None) -> datetime:
    earliest = datetime.now(UTC) + LEAD
    start = earliest if valid_from is None else valid_from
    if start.tzinfo is None:
        raise InvalidInput("validFrom needs a time zone", field=("validFrom",))
    if start < earliest - timedelta(milliseconds=1):
        raise InvalidInput(
            "a rule version takes effect in the future (history is never rewritten)",
            field=("validFrom",),
        )
    if valid_until is not None and valid_until <= start:
        raise InvalidInput("validUntil must be after validFrom", field=("validUntil",))
    return start


async def create_rule(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    code: str,
    kind: RuleKind,
    name: str,
    terms: TermsInput,
    priority: int = 0,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> RuleRecord:
    """Version 1 of a new rule in one of the merchant's programs."""
    actor.require(Role.MERCHANT)
    code = clean_code(code, "code")
    name = clean_text(name, "name", max_length=200)
    params = terms_json(kind, terms)
    start = _check_window(valid_from, valid_until)
    await _program_of_merchant(db, actor, program_id)
    return await _write_version(
        db, actor, program_id=program_id, code=code, version=1, kind=kind.value, name=name,
        params=params, priority=priority, status="active", valid_from=start,
        valid_until=valid_until,
    )  # fmt: skip


async def revise_rule(
    db: Database,
    actor: Actor,
    *,
    rule_id: int,
    name: str | None = None,
    terms: TermsInput | None = None,
    priority: int | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    disable: bool = False,
) -> RuleRecord:
    """A new version of the rule `rule_id` belongs to; what is not given carries over."""
    actor.require(Role.MERCHANT)
    latest = await _latest_version(db, actor, rule_id)
    # An end date carries over like everything else; one that would fall before this
    # version starts must be restated, not silently dropped.
    ends = latest.valid_until if valid_until is None else valid_until
    start = _check_window(valid_from, ends)
    kind = RuleKind(latest.kind)
    return await _write_version(
        db, actor, program_id=latest.program_id, code=latest.code, version=latest.version + 1,
        kind=kind.value,
        name=latest.name if name is None else clean_text(name, "name", max_length=200),
        params=latest.params if terms is None else terms_json(kind, terms),
        priority=latest.priority if priority is None else priority,
        status="disabled" if disable else "active", valid_from=start, valid_until=ends,
    )  # fmt: skip


async def _latest_version(db: Database, actor: Actor, rule_id: int) -> RuleRecord:
    table = EarningRule.__table__
    async with db.transaction() as session:
        row = (
            await session.execute(
                select(*_rule_columns)
                .join(Program, Program.id == table.c.program_id)
                .where(
                    Program.merchant_id == actor.merchant_id,
                    table.c.program_id
                    == select(table.c.program_id).where(table.c.id == rule_id).scalar_subquery(),
                    table.c.code
                    == select(table.c.code).where(table.c.id == rule_id).scalar_subquery(),
                )
                .order_by(table.c.version.desc())
                .limit(1)
            )
        ).first()
    if row is None:
        raise NotFound("rule not found", field=("ruleId",))
    return RuleRecord(*row)


async def _write_version(db: Database, actor: Actor, **fields: Any) -> RuleRecord:
    async with db.transaction() as session:
        try:
            row = (
                await session.execute(
                    insert(EarningRule)
                    .values(created_by=actor.subject, **fields)
                    .returning(*_rule_columns)
                )
            ).one()
        except IntegrityError as error:
            if constraint_name(error) == "uq_earning_rule_version":
                code = "code" if fields["version"] == 1 else "ruleId"
                raise AlreadyExists(
                    "a rule with this code exists"
                    if code == "code"
                    else "the rule was changed meanwhile; read it again",
                    field=(code,),
                ) from None
            raise
        record = RuleRecord(*row)
        await record_audit(
            session,
            actor,
            action="earning_rule.version",
            target=f"earning_rule:{record.id}",
            after={
                "code": record.code,
                "version": record.version,
                "status": record.status,
                "params": record.params,
                "valid_from": record.valid_from.isoformat(),
            },
        )
    _cache.pop(record.program_id, None)
    return record


async def set_promotion_stacking(
    db: Database, actor: Actor, *, program_id: int, stacking: Stacking
) -> None:
    actor.require(Role.MERCHANT)
    async with db.transaction() as session:
        program = await session.get(Program, program_id, with_for_update=True)
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        before = program.promotion_stacking
        program.promotion_stacking = stacking.value
        await record_audit(
            session,
            actor,
            action="program.promotion_stacking",
            target=f"program:{program_id}",
            before={"promotion_stacking": before},
            after={"promotion_stacking": stacking.value},
        )
    _cache.pop(program_id, None)


class ClawbackPolicy(enum.StrEnum):
    DEBT = "debt"
    WRITE_OFF = "write_off"


async def set_earning_policy(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    caps: Iterable[Cap] | None = None,
    clawback_policy: ClawbackPolicy | None = None,
) -> None:
    """The program's per member earning caps and what a refund does with spent points;
    what is not given stays. A new cap counts the earns from its setting on."""
    actor.require(Role.MERCHANT)
    stored_caps = None if caps is None else caps_json(caps)
    async with db.transaction() as session:
        program = await session.get(Program, program_id, with_for_update=True)
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        before = {"earn_caps": program.earn_caps, "clawback_policy": program.clawback_policy}
        if stored_caps is not None:
            program.earn_caps = stored_caps
        if clawback_policy is not None:
            program.clawback_policy = clawback_policy.value
        await record_audit(
            session, actor, action="program.earning_policy", target=f"program:{program_id}",
            before=before,
            after={"earn_caps": program.earn_caps, "clawback_policy": program.clawback_policy},
        )  # fmt: skip


# -- rules in force, cached per process ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramRules:
    program_id: int
    merchant_id: int
    stacking: Stacking
    versions: tuple[RuleRecord, ...]
    """Ordered by valid_from, then version."""
    terms: dict[int, PurchaseRule | Promotion | ActionRule]
    """Each version's terms, parsed once when loaded."""
    loaded_at: float
    needs_profile: bool = False
    """Some version has an audience: earns must read the member's tier and segments."""

    @classmethod
    def load(
        cls, program_id: int, merchant_id: int, stacking: Stacking, versions: tuple[RuleRecord, ...]
    ) -> ProgramRules:
        loaders: dict[RuleKind, Callable[..., PurchaseRule | Promotion | ActionRule]] = {
            RuleKind.PURCHASE: load_purchase_rule, RuleKind.PROMOTION: load_promotion,
            RuleKind.ACTION: load_action_rule,
        }  # fmt: skip
        terms: dict[int, PurchaseRule | Promotion | ActionRule] = {}
        for rule in versions:
            args = (rule.id, rule.code, rule.version, rule.name, rule.priority, rule.params)
            terms[rule.id] = loaders[RuleKind(rule.kind)](*args)
        needs_profile = any(
            not isinstance(t, ActionRule) and t.conditions.has_audience for t in terms.values()
        )
        return cls(program_id, merchant_id, stacking, versions, terms, time.monotonic(),
                   needs_profile)  # fmt: skip

    def in_force(self, at: datetime) -> InForce:
        """The rule versions in force at `at`, by kind."""
        latest: dict[str, RuleRecord] = {}
        for version in self.versions:
            if version.valid_from > at:
                break
            latest[version.code] = version
        found = InForce([], [], [])
        for rule in latest.values():
            if rule.status != "active" or (rule.valid_until and rule.valid_until <= at):
                continue
            terms = self.terms[rule.id]
            if isinstance(terms, PurchaseRule):
                found.purchase.append(terms)
            elif isinstance(terms, Promotion):
                found.promotions.append(terms)
            else:
                found.actions.append(terms)
        return found

    def lines_json(self, breakdown: Breakdown) -> dict[str, Any]:
        """The breakdown as ledger_earn takes it: each line with its rule's caps."""
        lines = []
        for line in breakdown.contributions:
            stored = line.as_json()
            terms = self.terms.get(line.rule_id) if line.rule_id is not None else None
            if terms is not None and terms.caps:
                stored["caps"] = [cap.as_json() for cap in terms.caps]
            lines.append(stored)
        return {"points": breakdown.points, "lines": lines}


@dataclass(frozen=True, slots=True)
class InForce:
    purchase: list[PurchaseRule]
    promotions: list[Promotion]
    actions: list[ActionRule]


_cache: OrderedDict[int, ProgramRules] = OrderedDict()
_CACHE_PROGRAMS = 1000
_membership_programs: OrderedDict[int, int] = OrderedDict()
_CACHE_MEMBERSHIPS = 200_000


def forget_cached() -> None:
    """Drop the per-process caches: for when the database is replaced underneath (tests
    that truncate and reuse ids, a restore). Ids are never reused otherwise."""
    _cache.clear()
    _membership_programs.clear()
    _merchant_programs.clear()


_program_query = Compiled(
    lambda: select(Program.id, Program.merchant_id, Program.promotion_stacking).where(
        Program.id == bindparam("program_id", type_=BigInteger)
    )
)
_versions_query = Compiled(
    lambda: (
        select(*_rule_columns)
        .where(EarningRule.__table__.c.program_id == bindparam("program_id", type_=BigInteger))
        .order_by(EarningRule.__table__.c.valid_from, EarningRule.__table__.c.version)
    )
)
_loading: dict[int, asyncio.Future[ProgramRules]] = {}


async def program_rules(db: Database, program_id: int) -> ProgramRules:
    """The program's rule versions, from this process's copy while it is fresh."""
    cached = _cache.get(program_id)
    if cached is not None and time.monotonic() - cached.loaded_at < CACHE_TTL:
        return cached
    # One reload per program at a time: the requests that find the copy stale together
    # wait for the same read instead of each reading the rules again.
    pending = _loading.get(program_id)
    if pending is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():  # the request reading them went away: read them here
                return await program_rules(db, program_id)
            raise
    future: asyncio.Future[ProgramRules] = asyncio.get_running_loop().create_future()
    _loading[program_id] = future
    try:
        loaded = await _load_program_rules(db, program_id)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as error:
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits
        raise
    else:
        future.set_result(loaded)
        return loaded
    finally:
        del _loading[program_id]


async def _load_program_rules(db: Database, program_id: int) -> ProgramRules:
    program = await db.fetch_one(*_program_query.bind(program_id=program_id))
    if program is None:
        raise NotFound("program not found", field=("programId",))
    rows = await db.fetch_all(*_versions_query.bind(program_id=program_id))
    loaded = ProgramRules.load(
        program[0], program[1], Stacking(program[2]), tuple(RuleRecord(*row) for row in rows)
    )
    _cache[program_id] = loaded
    _cache.move_to_end(program_id)
    while len(_cache) > _CACHE_PROGRAMS:
        _cache.popitem(last=False)
    return loaded


async def program_of_membership(db: Database, membership_id: int) -> int:
    """A membership's program never changes, so the answer is cached for good."""
    program_id = _membership_programs.get(membership_id)
    if program_id is None:
        row = await db.fetch_one(
            "SELECT program_id FROM membership WHERE id = %(id)s", {"id": membership_id}
        )
        if row is None:
            raise NotFound("membership not found", field=("membershipId",))
        remember_program(membership_id, int(row[0]))
        program_id = int(row[0])
    return program_id


def remember_program(membership_id: int, program_id: int) -> None:
    _membership_programs[membership_id] = program_id
    if len(_membership_programs) > _CACHE_MEMBERSHIPS:
        _membership_programs.popitem(last=False)


_merchant_programs: dict[int, tuple[tuple[int, ...], float]] = {}


async def likely_program(db: Database, merchant_id: int, membership_id: int) -> tuple[int, bool]:
    """The program of one of the merchant's memberships, and whether that is certain.

    Known memberships are certain. Otherwise, when the merchant has one program (the usual
    case) that program is the likely answer, without a read per membership: the earn
    confirms it in SQL and the caller falls back to `program_of_membership` when not.
    """
    known = _membership_programs.get(membership_id)
    if known is not None:
        return known, True
    cached = _merchant_programs.get(merchant_id)
    if cached is None or time.monotonic() - cached[1] >= CACHE_TTL:
        rows = await db.fetch_all(
            "SELECT id FROM program WHERE merchant_id = %(m)s AND status = 'active'",
            {"m": merchant_id},
        )
        cached = _merchant_programs[merchant_id] = (
            tuple(int(row[0]) for row in rows),
            time.monotonic(),
        )
    if len(cached[0]) == 1:
        return cached[0][0], False
    return await program_of_membership(db, membership_id), True
