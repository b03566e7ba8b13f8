"""Publishing exchange rates (operator) and closing pairs (merchants).

Rates are versions, never edited: publishing for a pair adds its next version, and
withdrawing adds a version that closes the pair. Before a version is written, the
graph of rates is checked at every moment of the new version's window where the graph
changes (see `cycles.py`); rate changes are serialised by an advisory lock so two
operators cannot each add half of a profitable cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, Inactive, InvalidInput, NotFound, ProfitableCycle
from alliance.exchange.cycles import cycle_product, profitable_cycle
from alliance.exchange.models import ExchangeOptOut, ExchangeRate
from alliance.programs.models import Merchant, Program
from alliance.validation import MAX_POINTS, check_decimal, check_range

MAX_TERM = 10**9
"""Largest numerator or denominator of a rate: keeps the arithmetic far from overflow."""
RATE_LOCK = 0x52415445  # pg_advisory_xact_lock key serialising rate changes ("RATE")
PAST_TOLERANCE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class RateRecord:
    id: int
    from_program_id: int
    to_program_id: int
    version: int
    numerator: int
    denominator: int
    fee_percent: Decimal
    fee_points: int
    min_points: int
    max_points: int | None
    valid_from: datetime
    valid_until: datetime | None
    withdrawn: bool
    published_by: str
    created_at: datetime

    @property
    def rate(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)

    @property
    def factor(self) -> Fraction:
        """What a large exchange returns per point: the rate net of the percentage fee."""
        return self.rate * (1 - Fraction(self.fee_percent) / 100)

    def in_force_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_until is None or moment < self.valid_until)

    @classmethod
    def from_row(cls, row: Any) -> RateRecord:
        return cls(*row)


RATE_COLUMNS = [ExchangeRate.__table__.c[f.name] for f in fields(RateRecord)]


def parse_rate(value: str) -> Fraction:
    """'3/2', '1.5' or '2': exact, positive, terms at most MAX_TERM."""
    try:
        rate = Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        raise InvalidInput(
            "rate must be a positive fraction like 3/2 or a decimal like 1.5", field=("rate",)
        ) from None
    if rate <= 0:
        raise InvalidInput("rate must be positive", field=("rate",))
    if rate.numerator > MAX_TERM or rate.denominator > MAX_TERM:
        raise InvalidInput(f"rate terms must be at most {MAX_TERM}", field=("rate",))
    return rate


def graph_at(rates: Sequence[RateRecord], moment: datetime) -> dict[tuple[int, int], Fraction]:
    """The edges in force at `moment`: per pair its highest version in force, if not a
    withdrawal."""
    chosen: dict[tuple[int, int], RateRecord] = {}
    for rate in rates:
        if rate.in_force_at(moment):
            pair = (rate.from_program_id, rate.to_program_id)
            if pair not in chosen or chosen[pair].version < rate.version:
                chosen[pair] = rate
    return {pair: rate.factor for pair, rate in chosen.items() if not rate.withdrawn}


def moments_to_check(rates: Sequence[RateRecord], new: RateRecord) -> list[datetime]:
    """Where, within the new version's window, the graph can change: its start, and every
    start or end of another version inside it."""
    moments = {new.valid_from}
    for rate in rates:
        for edge in (rate.valid_from, rate.valid_until):
            if edge is not None and new.in_force_at(edge):
                moments.add(edge)
    return sorted(moments)


async def _labels(session: AsyncSession, program_ids: set[int]) -> dict[int, str]:
    rows = await session.execute(
        select(Program.id, Merchant.code, Program.code)
        .join(Merchant, Merchant.id == Program.merchant_id)
        .where(Program.id.in_(program_ids))
    )
    return {row[0]: f"{row[1]}/{row[2]}" for row in rows}


async def publish_rate(
    db: Database,
    actor: Actor,
    *,
    from_program_id: int,
    to_program_id: int,
    rate: str,
    fee_percent: Decimal = Decimal(0),
    fee_points: int = 0,
    min_points: int = 1,
    max_points: int | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
) -> RateRecord:
    """Publish the next version of a pair's rate; refused if it closes a profitable cycle."""
    actor.require(Role.OPERATOR)
    exact = parse_rate(rate)
    check_decimal(
        fee_percent, "feePercent", maximum=Decimal("99.9999"), places=4, minimum=Decimal(0)
    )
    check_range(fee_points, "feePoints", minimum=0, maximum=MAX_POINTS)
    check_range(min_points, "minPoints", minimum=1, maximum=MAX_POINTS)
    if max_points is not None:
        check_range(max_points, "maxPoints", minimum=min_points, maximum=MAX_POINTS)
    if from_program_id == to_program_id:
        raise InvalidInput("a rate joins two different programs", field=("toProgramId",))
    now = datetime.now(UTC)
    start = valid_from or now
    if start < now - PAST_TOLERANCE:
        raise InvalidInput("validFrom may not be in the past", field=("validFrom",))
    if valid_until is not None and valid_until <= start:
        raise InvalidInput("validUntil must be after validFrom", field=("validUntil",))
    return await _add_version(
        db,
        actor,
        from_program_id=from_program_id,
        to_program_id=to_program_id,
        values={
            "numerator": exact.numerator,
            "denominator": exact.denominator,
            "fee_percent": fee_percent,
            "fee_points": fee_points,
            "min_points": min_points,
            "max_points": max_points,
            "valid_from": start,
            "valid_until": valid_until,
            "withdrawn": False,
        },
    )


async def withdraw_rate(
    db: Database, actor: Actor, *, from_program_id: int, to_program_id: int
) -> RateRecord:
    """Close the pair from now on: a version that withdraws it (history stays)."""
    actor.require(Role.OPERATOR)
    return await _add_version(
        db,
        actor,
        from_program_id=from_program_id,
        to_program_id=to_program_id,
        values={"withdrawn": True, "valid_from": datetime.now(UTC), "valid_until": None},
    )


async def _add_version(
    db: Database, actor: Actor, *, from_program_id: int, to_program_id: int, values: dict[str, Any]
) -> RateRecord:
    async with db.transaction() as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RATE_LOCK})
        programs = (
            await session.execute(
                select(Program.id, Program.status).where(
                    Program.id.in_([from_program_id, to_program_id])
                )
            )
        ).all()
        status = dict(programs)
        for field, program_id in (
            ("fromProgramId", from_program_id),
            ("toProgramId", to_program_id),
        ):
            if program_id not in status:
                raise NotFound("program not found", field=(field,))
            if status[program_id] != "active" and not values["withdrawn"]:
                raise Inactive("program is closed", field=(field,))
        rates = [
            RateRecord.from_row(row)
            for row in await session.execute(select(*RATE_COLUMNS).order_by(ExchangeRate.id))
        ]
        pair = [
            r
            for r in rates
            if (r.from_program_id, r.to_program_id) == (from_program_id, to_program_id)
        ]
        if values["withdrawn"]:
            if not pair:
                raise NotFound("no rate was ever published for this pair", field=("toProgramId",))
            last = max(pair, key=lambda r: r.version)
            kept = {
                "numerator": last.numerator,
                "denominator": last.denominator,
                "fee_percent": last.fee_percent,
                "fee_points": last.fee_points,
                "min_points": last.min_points,
                "max_points": last.max_points,
            }
            values = kept | values
        version = max((r.version for r in pair), default=0) + 1
        candidate = RateRecord(
            0,
            from_program_id,
            to_program_id,
            version,
            published_by=actor.subject,
            created_at=datetime.now(UTC),
            **values,
        )
        if not candidate.withdrawn:
            await _refuse_profitable_cycles(session, rates, candidate)
        row = (
            await session.execute(
                insert(ExchangeRate)
                .values(
                    from_program_id=from_program_id,
                    to_program_id=to_program_id,
                    version=version,
                    published_by=actor.subject,
                    **values,
                )
                .returning(*RATE_COLUMNS)
            )
        ).one()
        record = RateRecord.from_row(row)
        await record_audit(
            session,
            actor,
            action="exchange_rate.withdraw" if record.withdrawn else "exchange_rate.publish",
            target=f"exchange_rate:{record.id}",
            after={
                "from_program_id": from_program_id,
                "to_program_id": to_program_id,
                "version": version,
                "rate": f"{record.numerator}/{record.denominator}",
                "fee_percent": str(record.fee_percent),
                "fee_points": record.fee_points,
                "min_points": record.min_points,
                "max_points": record.max_points,
                "valid_from": record.valid_from.isoformat(),
                "valid_until": None
                if record.valid_until is None
                else record.valid_until.isoformat(),
            },
        )
        return record


async def _refuse_profitable_cycles(
    session: AsyncSession, rates: list[RateRecord], candidate: RateRecord
) -> None:
    everything = [*rates, candidate]
    for moment in moments_to_check(rates, candidate):
        edges = graph_at(everything, moment)
        cycle = profitable_cycle(edges)
        if cycle is not None:
            labels = await _labels(session, set(cycle))
            path = " → ".join(labels.get(node, str(node)) for node in cycle)
            gain = cycle_product(edges, cycle)
            raise ProfitableCycle(
                f"refused: from {moment.isoformat()} the cycle {path} would return "
                f"{float(gain):.6g} points per point (exactly {gain})",
                field=("rate",),
            )


async def set_exchange_opt_out(
    db: Database, actor: Actor, *, from_program_id: int, to_program_id: int, opted_out: bool
) -> bool:
    """Close (or reopen) exchanges from one program to another, for a merchant of either."""
    actor.require(Role.MERCHANT)
    async with db.transaction() as session:
        owners = dict(
            (
                await session.execute(
                    select(Program.id, Program.merchant_id).where(
                        Program.id.in_([from_program_id, to_program_id])
                    )
                )
            ).all()
        )
        if from_program_id not in owners or to_program_id not in owners:
            raise NotFound("program not found", field=("toProgramId",))
        if actor.merchant_id not in (owners[from_program_id], owners[to_program_id]):
            raise Forbidden("only a merchant of one of the two programs may close the pair")
        key = {
            "merchant_id": actor.merchant_id,
            "from_program_id": from_program_id,
            "to_program_id": to_program_id,
        }
        if opted_out:
            await session.execute(pg_insert(ExchangeOptOut).values(**key).on_conflict_do_nothing())
        else:
            await session.execute(
                delete(ExchangeOptOut).where(
                    *(getattr(ExchangeOptOut, k) == v for k, v in key.items())
                )
            )
        await record_audit(
            session,
            actor,
            action="exchange.opt_out" if opted_out else "exchange.opt_in",
            target=f"exchange_pair:{from_program_id}:{to_program_id}",
        )
        return opted_out


async def rates_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, RateRecord]:
    """Published rates are public inside the alliance: any authenticated caller reads them."""
    rows = await db.fetch_all(
        "SELECT "
        + ", ".join(c.name for c in RATE_COLUMNS)
        + " FROM exchange_rate WHERE id = ANY(%(ids)s)",
        {"ids": list(ids)},
    )
    return {row[0]: RateRecord.from_row(row) for row in rows}


async def rates_in_force(
    db: Database, actor: Actor, *, first: int, after: int | None, program_id: int | None = None
) -> tuple[list[RateRecord], bool]:
    """The rate in force now of every open pair (optionally touching one program), by id."""
    rows = await db.fetch_all(
        "SELECT "
        + ", ".join(f"r.{c.name}" for c in RATE_COLUMNS)
        + """
          FROM (SELECT DISTINCT ON (from_program_id, to_program_id) *
                  FROM exchange_rate
                 WHERE valid_from <= now() AND (valid_until IS NULL OR valid_until > now())
                 ORDER BY from_program_id, to_program_id, version DESC) r
         WHERE NOT r.withdrawn AND r.id > coalesce(%(after)s::bigint, 0)
           AND (%(program)s::bigint IS NULL
                OR %(program)s::bigint IN (r.from_program_id, r.to_program_id))
         ORDER BY r.id LIMIT %(limit)s""",
        {"after": after, "program": program_id, "limit": first + 1},
    )
    return [RateRecord.from_row(row) for row in rows[:first]], len(rows) > first


async def opted_out_pairs(db: Database, merchant_id: int) -> set[tuple[int, int]]:
    rows = await db.fetch_all(
        "SELECT from_program_id, to_program_id FROM exchange_opt_out WHERE merchant_id = %(m)s",
        {"m": merchant_id},
    )
    return {(row[0], row[1]) for row in rows}
