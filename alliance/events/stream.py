"""Event streams for subscriptions: a member's own events, a merchant's, from the outbox.

A stream starts after a cursor (an outbox event id the client saw last; none: from
now) and yields every fanned-out event past it in id order, then waits and looks again.
Only fanned-out events are shown: the fan-out gives events their sequence numbers
(migration 0015). Events can be fanned out out of id order (two transactions of
different members commit out of order), so each look goes back LOOKBACK ids behind the
cursor and skips what was already sent: an event that commits late still arrives, once.
The wake-up is the LISTEN channel `outbox_event` (the fan-out notifies once per batch;
nothing notifies on the points hot path, where a NOTIFY would serialise commits), with a
poll every POLL_SECONDS as the floor. While a process has subscribers it also fans out
itself every POLL_SECONDS, so streams flow when no webhook dispatcher runs (jobs off);
fan-outs never overlap, so this only takes turns with the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden
from alliance.events.dispatcher import fan_out

log = logging.getLogger("alliance.events")

POLL_SECONDS = 0.25
LOOKBACK = 1000
BATCH = 200


@dataclass(frozen=True, slots=True)
class StreamEvent:
    id: int
    topic: str
    aggregate: str | None
    sequence: int | None
    merchant_id: int | None
    member_id: int | None
    payload: dict[str, Any]
    created_at: datetime


def _scope(actor: Actor) -> tuple[int | None, int | None]:
    """(merchant, member) whose events the actor may follow."""
    if actor.role is Role.MEMBER:
        return actor.merchant_id, actor.member_id
    if actor.role is Role.MERCHANT:
        return actor.merchant_id, None
    raise Forbidden("event streams are for members and merchant staff")


async def follow_events(
    db: Database,
    actor: Actor,
    *,
    after: int | None = None,
    topics: frozenset[str] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[StreamEvent]:
    merchant_id, member_id = _scope(actor)
    if after is None:
        row = await db.fetch_one("SELECT coalesce(max(id), 0) FROM outbox_event")
        after = int(row[0]) if row else 0
    cursor = after
    sent: set[int] = set()
    wakeups = _wakeups.setdefault(db, Wakeups(db))
    wake = wakeups.subscribe()
    try:
        while True:
            rows = await db.fetch_all(
                "SELECT id, topic, aggregate, aggregate_seq, merchant_id, member_id, payload,"
                " created_at FROM outbox_event WHERE id > %(low)s::bigint"
                " AND aggregate_seq IS NOT NULL AND merchant_id = %(merchant)s::bigint"
                " AND (%(member)s::bigint IS NULL OR member_id = %(member)s::bigint)"
                " ORDER BY id LIMIT %(limit)s",
                {"low": max(after, cursor - LOOKBACK), "merchant": merchant_id,
                 "member": member_id, "limit": BATCH + len(sent)},
            )  # fmt: skip
            fresh = [StreamEvent(*row) for row in rows if row[0] not in sent]
            for event in fresh:
                sent.add(event.id)
                cursor = max(cursor, event.id)
                if topics is None or event.topic in topics:
                    yield event
            sent = {i for i in sent if i > cursor - LOOKBACK}
            if len(fresh) >= BATCH:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=poll_seconds)
    finally:
        wakeups.unsubscribe(wake)


class Wakeups:
    """One LISTEN connection per process and database, shared by every stream in it, and
    one fan-out every POLL_SECONDS while the process has streams."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.waiters: set[asyncio.Event] = set()
        self.task: asyncio.Task[None] | None = None
        self.pump: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self.waiters.add(event)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._listen(), name="outbox LISTEN")
        if self.pump is None or self.pump.done():
            self.pump = asyncio.create_task(self._fan_out(), name="outbox fan-out for streams")
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self.waiters.discard(event)
        if not self.waiters:
            for task in (self.task, self.pump):
                if task is not None:
                    task.cancel()
            self.task = self.pump = None

    async def _fan_out(self) -> None:
        while True:
            try:
                taken, _ = await fan_out(self.db)
            except Exception:  # the next tick tries again
                log.warning("fan-out for event streams failed", exc_info=True)
                taken = 0
            if taken:  # the fan-out's NOTIFY wakes the streams of every process
                for waiter in self.waiters:
                    waiter.set()
            await asyncio.sleep(POLL_SECONDS)

    async def _listen(self) -> None:
        url = (
            make_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("LISTEN outbox_event")
                async for _ in conn.notifies():
                    for waiter in self.waiters:
                        waiter.set()
        except psycopg.Error:  # the poll goes on; the next subscriber listens again
            return


_wakeups: weakref.WeakKeyDictionary[Database, Wakeups] = weakref.WeakKeyDictionary()
