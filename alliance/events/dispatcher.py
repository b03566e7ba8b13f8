"""The webhook dispatcher: outbox → deliveries → signed HTTP POSTs, at least once, in
order per member.

1. Fan-out (one at a time: a transaction-scoped advisory lock, skipped when busy): the
   next outbox events not yet fanned out get their aggregate's next sequence numbers,
   become one delivery per subscribed active endpoint of their merchant, in event order,
   and are marked fanned out. Because fan-outs never overlap, numbers and delivery ids
   follow the order in which events became visible; for one account's ledger events
   that is their commit order.
2. Claim: the deliveries due now that are the head of their queue (no earlier pending
   delivery for the same endpoint and member), leased for LEASE; several dispatchers
   (one per worker process) claim disjoint sets (SKIP LOCKED), and a queue's next
   delivery waits until its head is delivered or dead.
3. Send, outside any transaction, then record each attempt (visible to the merchant)
   and the outcome: delivered; or another try after an exponential backoff with jitter;
   or, after MAX_ATTEMPTS failures, dead (the queue moves on; `redeliverWebhook`
   re-queues it). A dispatcher that dies mid-batch leaves its leases to run out, and
   the deliveries go again: at least once. Receivers deduplicate by event id.

The HTTP client is aiohttp's, not httpx's: on this machine httpx spent 1.1–2.7 ms of CPU
per POST (its connection pool's bookkeeping), aiohttp 0.1–0.16 ms (bench/RESULTS.md,
webhooks), and the dispatcher shares its process's core with the API.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import orjson

from alliance.db.engine import Database
from alliance.errors import DomainError
from alliance.events.webhooks import check_destination, endpoint_secret, sign

log = logging.getLogger("alliance.webhooks")

MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=60)
TIMEOUT_SECONDS = 10.0
FAN_OUT_BATCH = 1000
CLAIM_BATCH = 200
CONCURRENCY = 32
IDLE_FIRST_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait before attempt n+1 after n failures: base × 2^(n-1), capped, with half of
    it random (equal jitter), so receivers coming back are not stampeded."""

    base_seconds: float = 5.0
    cap_seconds: float = 3600.0

    def delay(self, failures: int) -> float:
        full = min(self.cap_seconds, self.base_seconds * 2 ** max(0, failures - 1))
        return full / 2 + random.uniform(0, full / 2)


@dataclass(slots=True)
class Round:
    fanned_out: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery_id: int
    attempts: int
    url: str
    secret_sealed: bytes
    event_id: int
    body: bytes


RESPONSE_BODY_KEPT = 64 * 1024
"""A receiver's response body up to this is read (and dropped), so its connection is kept
alive; a longer one closes the connection instead of being read."""


def http_client() -> aiohttp.ClientSession:
    """Connections are kept for the next round, one per concurrent send; redirects are
    not followed (a 3xx is a failure: the SSRF guard checked this URL only). Made in a
    running event loop."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        headers={"User-Agent": "points-alliance-webhooks/1"},
        skip_auto_headers=("Accept-Encoding",),
        auto_decompress=False,
    )


async def fan_out(db: Database, *, batch: int = FAN_OUT_BATCH) -> tuple[int, int]:
    """Number the next outbox events and turn them into deliveries; returns how many
    events it took and deliveries it made ((0, 0) as well when another fan-out holds the
    lock). One call of `outbox_fan_out` (migrations/sql/0015_numbered_at_fan_out.sql) on
    an autocommit connection: one round trip."""
    row = await db.fetch_one("SELECT * FROM outbox_fan_out(%(batch)s)", {"batch": batch})
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _claim(db: Database, *, batch: int, lease: timedelta) -> list[_Claimed]:
    # One statement on an autocommit connection: the lease is taken atomically.
    rows = await db.fetch_all(
        "WITH heads AS (SELECT d.id FROM webhook_delivery d"
        " WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
        " AND (d.leased_until IS NULL OR d.leased_until < now())"
        " AND NOT EXISTS (SELECT 1 FROM webhook_delivery p"
        " WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key"
        " AND p.status = 'pending' AND p.id < d.id)"
        " ORDER BY d.id LIMIT %(batch)s FOR UPDATE SKIP LOCKED),"
        " leased AS (UPDATE webhook_delivery d SET leased_until = now() + %(lease)s"
        " FROM heads WHERE d.id = heads.id RETURNING d.id, d.attempts,"
        " d.endpoint_id, d.event_id)"
        " SELECT l.id, l.attempts, e.url, e.secret_sealed, o.id, o.topic,"
        " o.aggregate, o.aggregate_seq, o.merchant_id, o.member_id, o.created_at,"
        " o.payload FROM leased l JOIN webhook_endpoint e ON e.id = l.endpoint_id"
        " JOIN outbox_event o ON o.id = l.event_id ORDER BY l.id",
        {"batch": batch, "lease": lease},
    )
    return [
        _Claimed(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            orjson.dumps(
                {
                    "id": row[4],
                    "type": row[5],
                    "aggregate": row[6],
                    "sequence": row[7],
                    "merchant_id": row[8],
                    "member_id": row[9],
                    "created_at": row[10],
                    "data": row[11],
                }
            ),
        )
        for row in rows
    ]


async def _send(
    db: Database, client: aiohttp.ClientSession, claimed: _Claimed
) -> tuple[int | None, str | None, int]:
    """POST one delivery: (status code, error, duration ms); never raises."""
    started = time.perf_counter()
    try:
        await check_destination(claimed.url, db.settings)
        timestamp = int(time.time())
        secret = endpoint_secret(db.settings, claimed.secret_sealed)
        async with client.post(
            claimed.url,
            data=claimed.body,
            allow_redirects=False,
            headers={
                "Content-Type": "application/json",
                "X-Alliance-Event-Id": str(claimed.event_id),
                "X-Alliance-Timestamp": str(timestamp),
                "X-Alliance-Signature": sign(secret, timestamp, claimed.body),
            },
        ) as response:
            length = response.content_length
            if length is not None and length <= RESPONSE_BODY_KEPT:
                await response.read()
        status: int | None = response.status
        error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except DomainError as refused:
        status, error = None, refused.message
    except TimeoutError:
        status, error = None, f"no response within {TIMEOUT_SECONDS:g} s"
    except aiohttp.ClientError as failed:
        status, error = None, f"{type(failed).__name__}: {failed}"[:500]
    return status, error, int((time.perf_counter() - started) * 1000)


async def _record(
    db: Database,
    outcomes: Sequence[tuple[_Claimed, int | None, str | None, int]],
    *,
    max_attempts: int,
    backoff: Backoff,
    round_: Round,
) -> None:
    """Every attempt of the round and its outcome: two statements, one transaction."""
    ids, codes, errors, durations, statuses, waits = [], [], [], [], [], []
    for claimed, status, error, duration_ms in outcomes:
        failures = claimed.attempts + 1
        if error is None:
            round_.delivered += 1
            outcome, wait = "delivered", 0.0
        elif failures >= max_attempts:
            round_.dead += 1
            outcome, wait = "dead", 0.0
        else:
            round_.failed += 1
            outcome, wait = "pending", backoff.delay(failures)
        ids.append(claimed.delivery_id)
        codes.append(status)
        errors.append(error)
        durations.append(duration_ms)
        statuses.append(outcome)
        waits.append(wait)
    await db.fetch_one(
        "WITH r AS (SELECT * FROM unnest(%(ids)s::bigint[], %(codes)s::int[], %(errors)s::text[],"
        " %(durations)s::int[], %(statuses)s::text[], %(waits)s::float8[])"
        " AS r(id, code, error, duration_ms, status, wait)),"
        " attempts AS (INSERT INTO webhook_attempt (delivery_id, status_code, error, duration_ms)"
        " SELECT id, code, error, duration_ms FROM r ORDER BY id)"
        " UPDATE webhook_delivery d SET status = r.status, attempts = d.attempts + 1,"
        " last_error = r.error, leased_until = NULL,"
        " next_attempt_at = now() + make_interval(secs => r.wait),"
        " delivered_at = CASE WHEN r.status = 'delivered' THEN now() END"
        " FROM r WHERE d.id = r.id AND d.status = 'pending' RETURNING 1",
        {"ids": ids, "codes": codes, "errors": errors, "durations": durations,
         "statuses": statuses, "waits": waits},
    )  # fmt: skip


async def dispatch_due(
    db: Database,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: Backoff | None = None,
    lease: timedelta = LEASE,
    batch: int = CLAIM_BATCH,
    client: aiohttp.ClientSession | None = None,
    only_new: bool = False,
) -> Round:
    """Deliver until nothing is due now: each pass fans out what is new (then its
    deliveries may be due in this pass), claims the due queue heads and sends them.
    Fan-out takes whole batches only while they come back full: under a steady stream
    of events a loop "until none is new" would never get to deliver. With `only_new`
    the first pass claims only if its fan-out made deliveries: the serve loop's rounds
    between its periodic full looks, so that a stream of events no endpoint subscribes
    to costs one statement a round, not two."""
    round_ = Round()
    own_client = client is None
    http = client or http_client()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def send(claimed: _Claimed) -> tuple[_Claimed, int | None, str | None, int]:
        async with gate:
            return (claimed, *await _send(db, http, claimed))

    try:
        while True:
            made = 0
            while True:
                taken, deliveries = await fan_out(db)
                round_.fanned_out += taken
                made += deliveries
                if taken < FAN_OUT_BATCH:
                    break
            if only_new and not made:
                break
            only_new = False  # a queue's next delivery is due once its head went
            claimed = await _claim(db, batch=batch, lease=lease)
            if not claimed:
                break
            outcomes = await asyncio.gather(*(send(c) for c in claimed))
            await _record(
                db, outcomes, max_attempts=max_attempts, backoff=backoff or Backoff(),
                round_=round_,
            )  # fmt: skip
    finally:
        if own_client:
            await http.close()
    return round_


async def run_webhook_dispatcher(
    db: Database, *, interval_seconds: float = 0.25, log_every_seconds: float = 60.0
) -> None:
    """Inside `alliance serve`: dispatch until cancelled. A round delivers until nothing
    is due; then the dispatcher pauses 20 ms, so that under a stream of events each
    fan-out takes a batch rather than a transaction per event or two (the fan-out is on
    the ledger's database beside the hot path), unless the round had full batches (a
    backlog). After a round that found nothing to do the pause doubles, up to
    `interval_seconds`: the next events of a burst go out within tens of milliseconds
    while an idle dispatcher polls a few times a second. Between rounds it looks for due
    deliveries only when its fan-out made some, or `interval_seconds` after it last looked
    (retries coming due). Totals are logged at most every `log_every_seconds`."""
    idle = 0
    totals = Round()
    logged = time.monotonic()
    looked = logged - interval_seconds
    async with http_client() as client:
        while True:
            busy = False
            try:
                only_new = time.monotonic() - looked < interval_seconds
                if not only_new:
                    looked = time.monotonic()
                done = await dispatch_due(db, client=client, only_new=only_new)
                busy = bool(done.fanned_out or done.delivered or done.failed or done.dead)
                totals.delivered += done.delivered
                totals.failed += done.failed
                totals.dead += done.dead
            except asyncio.CancelledError:
                raise
            except Exception:  # the dispatcher outlives a failed round; leases run out
                log.exception("webhook dispatch failed")
            if time.monotonic() - logged >= log_every_seconds:
                if totals.delivered or totals.failed or totals.dead:
                    log.info(
                        "webhooks: %s delivered, %s failed, %s dead",
                        totals.delivered, totals.failed, totals.dead,
                    )  # fmt: skip
                totals, logged = Round(), time.monotonic()
            if busy:
                idle = 0
                if done.fanned_out < FAN_OUT_BATCH and done.delivered < CLAIM_BATCH:
                    await asyncio.sleep(IDLE_FIRST_SECONDS)
            else:
                await asyncio.sleep(min(interval_seconds, IDLE_FIRST_SECONDS * 2**idle))
                idle = min(idle + 1, 16)
