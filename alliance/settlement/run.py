"""Settlement runs: close every due period, turning its obligations into statements.

A run first fixes the period's watermark: the highest obligation id drawn so far, once
every transaction that might still commit an obligation at or below it has ended; it is
recorded with the period, in a transaction of its own. The statements are then written
in a second transaction from (ends_at, watermark) alone, so a run that dies between or
during the two is finished by the next one with exactly the same statements, and
obligations that commit later fall into the next period. Closed periods never change.

Why not mark each obligation with its period: a run would then write a row per
obligation (a million for a busy day) instead of a few hundred lines, and obligations
could no longer be immutable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, RetryLater
from alliance.settlement.models import (
    Cadence,
    PeriodStatus,
    SettlementCalendar,
    SettlementPeriod,
    SettlementStatement,
)
from alliance.settlement.periods import period_end, period_start
from alliance.settlement.statements import Group, draft_statements

WRITER_WAIT_SECONDS = 30.0
SETTLEMENT_JOB = Actor(Role.OPERATOR, "system:settlement", "alliance-jobs")
"""Who closes periods on the schedule (and `alliance jobs run settlement`)."""
log = logging.getLogger("alliance.settlement")


def utcnow() -> datetime:
    """The run's clock (a seam for tests that need a period to have ended)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PeriodRecord:
    id: int
    starts_at: datetime
    ends_at: datetime
    cadence: str
    status: str
    watermark: int
    previous_ends_at: datetime | None
    previous_watermark: int
    obligations: int | None
    run_by: str
    created_at: datetime
    closed_at: datetime | None


PERIOD_COLUMNS = [SettlementPeriod.__table__.c[name] for name in PeriodRecord.__slots__]


def require_clearing_house(actor: Actor) -> None:
    """Runs and the statements' issue and payment belong to the alliance's operator or its
    alliance-wide finance team."""
    actor.require(Role.OPERATOR, Role.FINANCE)
    if not actor.is_alliance_wide:
        raise Forbidden("only the alliance's own finance team may do this")


# A period's obligations: up to its end and watermark, less what earlier periods took.
# Two disjoint index ranges (on time; late, by id), as settlement_period_obligations()
# in migrations/sql/0007_exchange.sql, so the cost follows the period, not the table.
# Each range is grouped on its own (the planner keeps its estimate of the groups and
# hashes them), then the two sets of sums are added.
_RANGES = (
    "occurred_at >= coalesce(:previous_ends_at, '-infinity'::timestamptz)"
    " AND occurred_at < :ends_at AND id <= :watermark",
    "id > :previous_watermark AND id <= :watermark"
    " AND occurred_at < coalesce(:previous_ends_at, '-infinity'::timestamptz)",
)
PERIOD_GROUPS = (
    "SELECT kind, debtor_merchant_id, creditor_merchant_id, sum(n), sum(points), sum(amount)"
    " FROM ("
    + " UNION ALL ".join(
        "SELECT kind, debtor_merchant_id, creditor_merchant_id, count(*) AS n,"
        " sum(points) AS points, sum(amount) AS amount FROM settlement_obligation"
        f" WHERE {condition} GROUP BY 1, 2, 3"
        for condition in _RANGES
    )
    + ") ranges GROUP BY 1, 2, 3"
)


def period_params(period: PeriodRecord) -> dict[str, Any]:
    return {
        "watermark": period.watermark,
        "ends_at": period.ends_at,
        "previous_watermark": period.previous_watermark,
        "previous_ends_at": period.previous_ends_at,
    }


async def _lock_calendar(session: AsyncSession) -> Cadence:
    """The calendar row, locked: runs and cadence changes take turns on it."""
    await session.execute(
        text("INSERT INTO settlement_calendar (id) VALUES (1) ON CONFLICT DO NOTHING")
    )
    return Cadence(str(await session.scalar(select(SettlementCalendar.cadence).with_for_update())))


async def set_cadence(db: Database, actor: Actor, *, cadence: Cadence) -> Cadence:
    """The cadence of periods not yet closed (the next period ends at its next boundary)."""
    require_clearing_house(actor)
    async with db.transaction() as session:
        before = await _lock_calendar(session)
        await session.execute(
            update(SettlementCalendar).values(cadence=cadence.value, updated_at=text("now()"))
        )
        await record_audit(
            session,
            actor,
            action="settlement.cadence",
            target="settlement",
            before={"cadence": before.value},
            after={"cadence": cadence.value},
        )
    return cadence


async def run_settlement(
    db: Database, actor: Actor, *, until: datetime | None = None
) -> list[PeriodRecord]:
    """Close every period that ended by `until` (default: now), oldest first; returns
    the periods closed by this call (none when everything due was already closed)."""
    require_clearing_house(actor)
    now = utcnow()
    until = min(until or now, now)
    closed = []
    while (period := await _open_next(db, actor, until)) is not None:
        done = await _close(db, actor, period)
        if done is not None:
            closed.append(done)
    return closed


async def _open_next(db: Database, actor: Actor, until: datetime) -> PeriodRecord | None:
    """The running period (a run that died), or the next due one with its watermark fixed."""
    watermark = await _settled_watermark(db)
    async with db.transaction() as session:
        cadence = await _lock_calendar(session)
        running = (
            await session.execute(
                select(*PERIOD_COLUMNS).where(SettlementPeriod.status == PeriodStatus.RUNNING)
            )
        ).first()
        if running is not None:
            return PeriodRecord(*running)
        last = (
            await session.execute(
                select(*PERIOD_COLUMNS).order_by(SettlementPeriod.ends_at.desc()).limit(1)
            )
        ).first()
        zone = db.settings.zone
        if last is not None:
            previous = PeriodRecord(*last)
            start, previous_ends_at, previous_watermark = (
                previous.ends_at,
                previous.ends_at,
                previous.watermark,
            )
        else:
            first = await session.scalar(text("SELECT min(occurred_at) FROM settlement_obligation"))
            if first is None:
                return None
            start, previous_ends_at, previous_watermark = (
                period_start(first, cadence, zone),
                None,
                0,
            )
        ends_at = period_end(start, cadence, zone)
        if ends_at > until:
            return None
        row = (
            await session.execute(
                insert(SettlementPeriod)
                .values(
                    starts_at=start,
                    ends_at=ends_at,
                    cadence=cadence.value,
                    watermark=max(watermark, previous_watermark),
                    previous_ends_at=previous_ends_at,
                    previous_watermark=previous_watermark,
                    run_by=actor.subject,
                )
                .returning(*PERIOD_COLUMNS)
            )
        ).one()
        return PeriodRecord(*row)


async def _settled_watermark(db: Database) -> int:
    """The highest obligation id drawn so far, once no transaction that might commit an
    obligation at or below it is still running.

    Ledger functions write their ledger transaction (which gives them a transaction id)
    before they draw an obligation id, so any writer holding an id up to the watermark
    is in a snapshot taken after reading it (a later statement), and waiting for that
    snapshot's running transactions to end waits for all of them. It runs outside any
    transaction and holds no lock, so concurrent runs (every `serve` worker has the
    schedule) never wait for each other here."""
    row = await db.fetch_one(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM settlement_obligation_id_seq"
    )
    watermark = int(row[0]) if row is not None else 0
    snapshot = await db.fetch_one("SELECT pg_current_snapshot()::text")
    assert snapshot is not None
    deadline = time.monotonic() + WRITER_WAIT_SECONDS
    while True:
        running = await db.fetch_one(
            "SELECT count(*) FROM pg_snapshot_xip(CAST(%(snapshot)s AS pg_snapshot)) AS x(xid)"
            " WHERE pg_xact_status(x.xid) = 'in progress'",
            {"snapshot": snapshot[0]},
        )
        if running is None or running[0] == 0:
            return watermark
        if time.monotonic() > deadline:
            raise RetryLater("ledger transactions are still running; run settlement again")
        await asyncio.sleep(0.02)


async def _close(db: Database, actor: Actor, period: PeriodRecord) -> PeriodRecord | None:
    """Write the period's statements and close it: one transaction, all or nothing. None
    when a concurrent run closed it first."""
    async with db.transaction() as session:
        status = await session.scalar(
            select(SettlementPeriod.status)
            .where(SettlementPeriod.id == period.id)
            .with_for_update()
        )
        if status == PeriodStatus.CLOSED:
            return None
        rows = (await session.execute(text(PERIOD_GROUPS), period_params(period))).all()
        groups = [Group(r[0], r[1], r[2], int(r[3]), int(r[4]), Decimal(r[5])) for r in rows]
        drafts = draft_statements(groups)
        if drafts:
            # All statements in one statement, then all their lines in another.
            statements = [
                {"period_id": period.id, "merchant_id": d.party, "receivable": d.receivable,
                 "payable": d.payable, "net": d.net, "rounding": d.rounding}
                for d in drafts
            ]  # fmt: skip
            returning = insert(SettlementStatement).returning(
                SettlementStatement.id, sort_by_parameter_order=True
            )
            ids = (await session.execute(returning, statements)).scalars().all()
            # One statement for every line (arrays unnested): a thousand lines cost one
            # round trip, not a thousand parameter sets.
            lines = [
                (statement_id, n, line)
                for statement_id, draft in zip(ids, drafts, strict=True)
                for n, line in enumerate(draft.lines, start=1)
            ]
            await session.execute(
                text(
                    "INSERT INTO settlement_line (statement_id, position, kind,"
                    " counterparty_merchant_id, obligation_kind, debtor_merchant_id,"
                    " creditor_merchant_id, obligations, points, exact_amount, amount)"
                    " SELECT * FROM unnest(CAST(:statement AS bigint[]), CAST(:position AS int[]),"
                    " CAST(:kind AS text[]), CAST(:counterparty AS bigint[]),"
                    " CAST(:obligation_kind AS text[]), CAST(:debtor AS bigint[]),"
                    " CAST(:creditor AS bigint[]), CAST(:obligations AS bigint[]),"
                    " CAST(:points AS bigint[]), CAST(:exact AS numeric[]),"
                    " CAST(:amount AS numeric[]))"
                ),
                {
                    "statement": [s for s, _, _ in lines],
                    "position": [n for _, n, _ in lines],
                    "kind": [x.kind.value for _, _, x in lines],
                    "counterparty": [x.counterparty for _, _, x in lines],
                    "obligation_kind": [x.obligation_kind for _, _, x in lines],
                    "debtor": [x.debtor for _, _, x in lines],
                    "creditor": [x.creditor for _, _, x in lines],
                    "obligations": [x.obligations for _, _, x in lines],
                    "points": [x.points for _, _, x in lines],
                    "exact": [x.exact for _, _, x in lines],
                    "amount": [x.amount for _, _, x in lines],
                },
            )
        total = sum(group.obligations for group in groups)
        await session.execute(
            update(SettlementPeriod)
            .where(SettlementPeriod.id == period.id)
            .values(status=PeriodStatus.CLOSED.value, obligations=total, closed_at=text("now()"))
        )
        await record_audit(
            session,
            actor,
            action="settlement.run",
            target=f"settlement_period:{period.id}",
            after={
                "starts_at": period.starts_at.isoformat(),
                "ends_at": period.ends_at.isoformat(),
                "watermark": period.watermark,
                "obligations": total,
            },
        )
        return await _period(session, period.id)


async def _period(session: AsyncSession, period_id: int) -> PeriodRecord:
    row = (
        await session.execute(select(*PERIOD_COLUMNS).where(SettlementPeriod.id == period_id))
    ).one()
    return PeriodRecord(*row)


async def run_settlement_schedule(db: Database, *, interval_seconds: float) -> None:
    """Close due periods every `interval_seconds` until cancelled (inside `alliance serve`).

    Every worker may run it: runs take turns on the calendar row, and a period already
    closed is left alone, so a second run finds nothing to do."""
    await asyncio.sleep(random.uniform(0, interval_seconds))
    while True:
        try:
            for period in await run_settlement(db, SETTLEMENT_JOB):
                log.info(
                    "settlement period %s closed: %s obligations", period.id, period.obligations
                )
        except asyncio.CancelledError:
            raise
        except Exception:  # the schedule outlives a failed run; the next one resumes it
            log.exception("settlement run failed")
        await asyncio.sleep(interval_seconds)
