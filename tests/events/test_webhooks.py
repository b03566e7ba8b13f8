"""Webhooks against a real receiver on a local port: signatures, retries, dead letters,
redelivery, order per member, a dispatcher killed mid-batch, and the SSRF guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import DomainError, ErrorCode
from alliance.events.dispatcher import Backoff, dispatch_due, fan_out
from alliance.events.webhooks import (
    check_destination,
    redeliver,
    register_endpoint,
    verify_signature,
)
from alliance.ledger.service import spend_points
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from tests.events.receiver import Receiver
from tests.factories import give_points, make_membership, make_program, merchant_actor

NOW = Backoff(base_seconds=0.0)
"""Retries due at once: the tests need not wait out real backoffs."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    if server._server is not None:
        server.stop()


async def _shop(db: Database) -> tuple[ProgramRecord, MembershipRecord]:
    program = await make_program(db)
    return program, await make_membership(db, program)


async def _deliveries(db: Database) -> list[tuple[Any, ...]]:
    return await db.fetch_all(
        "SELECT d.event_id, d.status, d.attempts, count(a.id) FROM webhook_delivery d"
        " LEFT JOIN webhook_attempt a ON a.delivery_id = d.id GROUP BY d.id ORDER BY d.id"
    )


async def test_a_signed_event_reaches_the_receiver(db: Database, receiver: Receiver) -> None:
    program, membership = await _shop(db)
    staff = merchant_actor(program.merchant_id)
    registered = await register_endpoint(db, staff, url=receiver.url, event_types=["points.earned"])
    earned = await give_points(db, membership, program, 42)
    done = await dispatch_due(db)
    assert (done.fanned_out, done.delivered, done.failed) == (1, 1, 0)
    (got,) = receiver.received
    secret = registered.secret.encode()
    assert verify_signature(secret, got.timestamp, got.body, got.signature, now=time.time())
    assert not verify_signature(b"x" * 32, got.timestamp, got.body, got.signature,
                                now=time.time())  # fmt: skip
    assert not verify_signature(secret, got.timestamp, got.body + b" ", got.signature,
                                now=time.time())  # fmt: skip
    assert not verify_signature(secret, got.timestamp, got.body, got.signature,
                                now=time.time() + 3600)  # fmt: skip
    event = orjson.loads(got.body)
    assert event["type"] == "points.earned"
    assert event["aggregate"] == f"member:{membership.member_id}"
    assert event["data"]["transaction_id"] == earned.transaction_id
    assert event["data"]["points"] == 42
    assert await _deliveries(db) == [(got.event_id, "delivered", 1, 1)]
    # Nothing is sent twice once delivered.
    assert (await dispatch_due(db)).delivered == 0
    assert len(receiver.received) == 1


async def test_only_subscribed_topics_of_the_own_merchant(db: Database, receiver: Receiver) -> None:
    program, membership = await _shop(db)
    other, other_membership = await _shop(db)
    await register_endpoint(
        db, merchant_actor(program.merchant_id), url=receiver.url, event_types=["points.spent"]
    )
    await give_points(db, membership, program, 50)
    await give_points(db, other_membership, other, 50)
    await spend_points(db, merchant_actor(program.merchant_id), membership_id=membership.id,
                       points=5, reason="tea", idempotency_key="s1")  # fmt: skip
    await dispatch_due(db)
    assert [orjson.loads(r.body)["type"] for r in receiver.received] == ["points.spent"]


async def test_receiver_down_then_up(db: Database, receiver: Receiver) -> None:
    program, membership = await _shop(db)
    staff = merchant_actor(program.merchant_id)
    await register_endpoint(db, staff, url=receiver.url, event_types=["*"])
    receiver.stop()
    await give_points(db, membership, program, 1)
    first = await dispatch_due(db, backoff=Backoff(base_seconds=3600))
    assert (first.delivered, first.failed) == (0, 1)
    (row,) = await db.fetch_all(
        "SELECT status, attempts, next_attempt_at > now() + interval '20 minutes', last_error"
        " FROM webhook_delivery"
    )
    assert row[:3] == ("pending", 1, True)
    assert "Connect" in row[3]
    assert (await dispatch_due(db)).failed == 0  # not due yet: nothing is tried
    receiver.start()
    async with db.connection() as conn:  # the backoff has passed
        await conn.execute("UPDATE webhook_delivery SET next_attempt_at = now()")
    assert (await dispatch_due(db)).delivered == 1
    assert len(receiver.received) == 1
    attempts = await db.fetch_all(
        "SELECT status_code, error IS NULL FROM webhook_attempt ORDER BY id"
    )
    assert attempts == [(None, False), (200, True)]


async def test_dead_letter_after_n_failures_and_redelivery(
    db: Database, receiver: Receiver
) -> None:
    program, membership = await _shop(db)
    staff = merchant_actor(program.merchant_id)
    await register_endpoint(db, staff, url=receiver.url, event_types=["*"])
    receiver.stop()
    await give_points(db, membership, program, 1)
    await give_points(db, membership, program, 2)
    done = await dispatch_due(db, backoff=NOW, max_attempts=3)
    assert (done.failed, done.dead, done.delivered) == (4, 2, 0)
    rows = await _deliveries(db)
    assert [(r[1], r[2], r[3]) for r in rows] == [("dead", 3, 3), ("dead", 3, 3)]
    receiver.start()
    (dead_id,) = (await db.fetch_all("SELECT min(id) FROM webhook_delivery"))[0]
    again = await redeliver(db, staff, delivery_id=dead_id)
    assert (again.status, again.attempts) == ("pending", 0)
    with pytest.raises(DomainError) as pending:
        await redeliver(db, staff, delivery_id=dead_id)
    assert pending.value.code is ErrorCode.INVALID_TRANSITION
    assert (await dispatch_due(db)).delivered == 1
    assert receiver.ids() == [rows[0][0]]
    stranger = merchant_actor((await make_program(db)).merchant_id)
    with pytest.raises(DomainError) as hidden:
        await redeliver(db, stranger, delivery_id=dead_id)
    assert hidden.value.code is ErrorCode.NOT_FOUND


async def test_order_per_member_at_least_once_across_a_killed_dispatcher(
    db: Database, receiver: Receiver
) -> None:
    program = await make_program(db)
    members = [await make_membership(db, program) for _ in range(3)]
    await register_endpoint(
        db, merchant_actor(program.merchant_id), url=receiver.url, event_types=["*"]
    )
    for n in range(6):
        for membership in members:
            await give_points(db, membership, program, n + 1)
    receiver.fail_every = 4

    # A dispatcher dies (cancelled) once the receiver has taken a few requests: what it
    # sent is not recorded, its leases stay.
    dying = asyncio.create_task(dispatch_due(db, backoff=NOW, max_attempts=50))
    while receiver.requests < 5:  # noqa: ASYNC110 (the receiver counts in its own thread)
        await asyncio.sleep(0.005)
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    async with db.connection() as conn:  # its leases run out
        await conn.execute("UPDATE webhook_delivery SET leased_until = now() - interval '1 s'")
    await dispatch_due(db, backoff=NOW, max_attempts=50)

    events = await db.fetch_all(
        "SELECT id, member_id, aggregate_seq FROM outbox_event WHERE topic = 'points.earned'"
        " ORDER BY id"
    )
    assert set(receiver.ids()) == {e[0] for e in events}  # every event, at least once
    member_of = {e[0]: e[1] for e in events}
    for member_id in {e[1] for e in events}:
        first_seen: list[int] = []
        for event_id in receiver.ids():
            if member_of[event_id] == member_id and event_id not in first_seen:
                first_seen.append(event_id)
        assert first_seen == sorted(first_seen), f"member {member_id} out of order"
        sequence = [orjson.loads(r.body)["sequence"] for r in receiver.received
                    if member_of[r.event_id] == member_id]  # fmt: skip
        assert sorted(set(sequence)) == list(range(1, 7))
    assert {r[1] for r in await _deliveries(db)} == {"delivered"}


async def test_only_new_rounds_look_for_due_deliveries_only_after_making_some(
    db: Database, receiver: Receiver
) -> None:
    program, membership = await _shop(db)
    other, other_membership = await _shop(db)
    staff = merchant_actor(program.merchant_id)
    await register_endpoint(db, staff, url=receiver.url, event_types=["*"])
    receiver.stop()
    await give_points(db, membership, program, 1)
    assert (await dispatch_due(db, only_new=True)).failed == 1  # made a delivery: tried
    receiver.start()
    async with db.connection() as conn:  # the retry comes due
        await conn.execute("UPDATE webhook_delivery SET next_attempt_at = now()")
    await give_points(db, other_membership, other, 1)  # no endpoint: no delivery made
    idle = await dispatch_due(db, only_new=True)
    assert (idle.fanned_out, idle.delivered) == (1, 0)  # the due retry waits for a full look
    assert (await dispatch_due(db)).delivered == 1
    assert len(receiver.received) == 1


async def test_sequence_numbers_per_aggregate(db: Database) -> None:
    program, membership = await _shop(db)
    other = await make_membership(db, program)
    for _ in range(3):
        await give_points(db, membership, program, 1)
        await give_points(db, other, program, 1)
    unnumbered = "SELECT count(*) FROM outbox_event WHERE aggregate_seq IS NULL"
    assert await db.fetch_one(unnumbered) == (6,)  # the hot path writes no number
    assert await fan_out(db, batch=4) == (4, 0)  # no endpoint: numbered, no delivery
    assert await fan_out(db, batch=4) == (2, 0)  # a second batch goes on counting
    rows = await db.fetch_all(
        "SELECT aggregate, array_agg(aggregate_seq ORDER BY id) FROM outbox_event"
        " GROUP BY aggregate ORDER BY aggregate"
    )
    assert rows == [
        (f"member:{membership.member_id}", [1, 2, 3]),
        (f"member:{other.member_id}", [1, 2, 3]),
    ]


class TestSsrfGuard:
    production = Settings(production=True, secret_key="x")

    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.5/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://0.0.0.0/hook",
            "https://localhost/hook",
            "http://93.184.216.34/hook",
            "ftp://93.184.216.34/hook",
            "https://user:pw@93.184.216.34/hook",
        ],
    )
    async def test_refused_in_production(self, url: str) -> None:
        with pytest.raises(DomainError) as refused:
            await check_destination(url, self.production)
        assert refused.value.code is ErrorCode.INVALID_INPUT

    async def test_public_https_is_allowed(self) -> None:
        await check_destination("https://93.184.216.34/hook", self.production)

    async def test_local_receivers_are_allowed_outside_production(self) -> None:
        await check_destination("http://127.0.0.1:9/hook", Settings())

    async def test_registration_refuses_bad_input(self, db: Database) -> None:
        program, _ = await _shop(db)
        staff = merchant_actor(program.merchant_id)
        for kwargs in (
            {"url": "not a url", "event_types": ["*"]},
            {"url": "http://127.0.0.1/h", "event_types": []},
            {"url": "http://127.0.0.1/h", "event_types": ["points.stolen"]},
            {"url": "http://127.0.0.1/h", "event_types": ["*"], "secret": "short"},
        ):
            with pytest.raises(DomainError) as refused:
                await register_endpoint(db, staff, **kwargs)  # type: ignore[arg-type]
            assert refused.value.code is ErrorCode.INVALID_INPUT


async def test_jobs_run_webhooks(db: Database, receiver: Receiver) -> None:
    from tests.test_cli import _alliance

    program, membership = await _shop(db)
    await register_endpoint(
        db, merchant_actor(program.merchant_id), url=receiver.url, event_types=["*"]
    )
    await give_points(db, membership, program, 3)
    result = await _alliance(db, "jobs", "run", "webhooks")
    assert result.returncode == 0, result.stderr
    assert "fanned out 1 events: 1 delivered, 0 failed (retried later), 0 dead" in result.stdout
    assert len(receiver.received) == 1
