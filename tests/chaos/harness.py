"""Chaos harness: the real server as a subprocess, clients sending mixed mutations with
idempotency keys, and what they were told, to check against the ledger afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from alliance.auth.clients import create_client, get_client
from alliance.auth.models import Role
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from alliance.ledger.verify import verify_ledger
from alliance.rules.models import RuleKind
from alliance.rules.terms import TermsInput
from tests.factories import backdated_rule, give_points, make_membership, make_program
from tests.graphql.helpers import gid

AWARD = """mutation($input: MovePointsInput!) { awardPoints(input: $input) {
  entry { id points balanceAfter } replayed userErrors { code } } }"""
SPEND = """mutation($input: MovePointsInput!) { spendPoints(input: $input) {
  entry { id points balanceAfter } replayed userErrors { code } } }"""
PURCHASE = """mutation($input: RecordPurchaseInput!) { recordPurchase(input: $input) {
  entry { id points balanceAfter } replayed userErrors { code } } }"""
REFUND = """mutation($input: ReversePurchaseInput!) { reversePurchase(input: $input) {
  reversal { clawback replayed } userErrors { code } } }"""


@dataclass
class Request:
    name: str
    query: str
    variables: dict[str, Any]
    scope: str
    key: str
    acknowledged: dict[str, Any] | None = None
    """The payload of a 200 answer without userErrors."""
    acknowledged_at: float | None = None
    """time.monotonic() of the acknowledgement."""
    refused: str | None = None
    """The userError code of a refusal (e.g. INSUFFICIENT_POINTS): nothing was written."""


@dataclass
class Load:
    url: str
    token: str
    merchant_id: int
    client_id: str
    memberships: list[str]
    sent: list[Request] = field(default_factory=list)
    counter: int = 0
    unavailable: int = 0
    """503 answers (the database was away)."""
    without_retry_after: int = 0
    """503 answers that did not say when to retry."""

    def next_request(self, rng: random.Random) -> Request:
        self.counter += 1
        n = self.counter
        membership = rng.choice(self.memberships)
        earlier = [r for r in self.sent if r.name == "purchase" and r.acknowledged]
        kind = rng.choice(("award", "spend", "purchase", "purchase", "refund"))
        if kind == "refund" and earlier:
            order = rng.choice(earlier).key
            return Request("refund", REFUND, {"input": {
                "orderId": order, "refundId": f"rf-{n}", "amount": "1.00"}},
                f"refund:{self.merchant_id}", f"rf-{n}")  # fmt: skip
        if kind in ("purchase", "refund"):
            return Request("purchase", PURCHASE, {"input": {
                "membershipId": membership, "orderId": f"o-{n}",
                "amount": f"{rng.randint(5, 200)}.00",
                "occurredAt": datetime.now(UTC).isoformat()}},
                f"order:{self.merchant_id}", f"o-{n}")  # fmt: skip
        query = AWARD if kind == "award" else SPEND
        return Request(kind, query, {"input": {
            "membershipId": membership, "points": rng.randint(1, 40), "reason": "chaos",
            "idempotencyKey": f"k-{n}"}}, self.client_id, f"k-{n}")  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(db: Database, port: int, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """`alliance serve` with two workers on the database; `settings` are more ALLIANCE_*."""
    env = os.environ | {
        "ALLIANCE_DATABASE_URL": db.url,
        "ALLIANCE_SECRET_KEY": db.settings.secret_key or "",
        "ALLIANCE_DATA_DIR": str(db.settings.data_dir),
        "ALLIANCE_JOBS": "0",
        "ALLIANCE_ACCESS_LOG": "0",
        **{f"ALLIANCE_{name.upper()}": value for name, value in settings.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "alliance", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes every worker
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


async def until_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the server exited early"
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        await asyncio.sleep(0.2)


async def send(client: httpx.AsyncClient, load: Load, request: Request) -> dict[str, Any] | None:
    """The mutation's payload, or None when the server did not answer (it was killed) or
    answered 503 (the database is away: retry). Anything else fails the test."""
    try:
        answer = await client.post(
            "/graphql",
            json={"query": request.query, "variables": request.variables},
            headers={"Authorization": f"Bearer {load.token}"},
        )
    except httpx.TransportError:
        return None
    assert answer.status_code in (200, 503), answer.text  # never a 500
    if answer.status_code == 503:
        load.unavailable += 1
        if "retry-after" not in answer.headers:
            load.without_retry_after += 1
        return None
    body = answer.json()
    assert "errors" not in body, body
    (payload,) = body["data"].values()
    return dict(payload)


async def client_loop(
    client: httpx.AsyncClient, load: Load, seed: int, stop: asyncio.Event
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        request = load.next_request(rng)
        load.sent.append(request)
        payload = await send(client, load, request)
        if payload is None:
            await asyncio.sleep(0.05)
            continue
        if payload["userErrors"]:
            request.refused = payload["userErrors"][0]["code"]
        else:
            request.acknowledged = payload
            request.acknowledged_at = time.monotonic()


async def setup(db: Database, port: int) -> Load:
    program = await make_program(db)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    memberships = [await make_membership(db, program) for _ in range(12)]
    for membership in memberships:
        await give_points(db, membership, program, 500)
    client_id, _ = await create_client(
        db, name="pos", role=Role.MERCHANT, merchant_id=program.merchant_id, client_id="pos"
    )
    record = await get_client(db, client_id)
    assert record is not None
    token, _ = await issue_access_token(db, actor=record.actor(), ttl_seconds=3600)
    return Load(f"http://127.0.0.1:{port}", token, program.merchant_id, client_id,
                [gid("Membership", m.id) for m in memberships])  # fmt: skip


async def committed(db: Database, request: Request) -> int:
    if request.name == "refund":
        sql = ("SELECT count(*) FROM purchase_refund WHERE merchant_id = %(m)s"
               " AND refund_id = %(k)s")  # fmt: skip
        row = await db.fetch_one(sql, {"m": int(request.scope.split(":")[1]), "k": request.key})
    else:
        row = await db.fetch_one(
            "SELECT count(*) FROM ledger_transaction"
            " WHERE idempotency_scope = %(s)s AND idempotency_key = %(k)s",
            {"s": request.scope, "k": request.key},
        )
    assert row is not None
    return int(row[0])


async def resend_all(client: httpx.AsyncClient, load: Load) -> None:
    """Every request once more, on a server that is up. Acknowledged ones must answer as
    replays of what was acknowledged; the others are applied now, or were committed just
    before the fault and answer as replays. Refused ones may be refused again or applied."""
    for request in load.sent:
        again = await send(client, load, request)
        assert again is not None, "the server answers"
        if request.acknowledged is None:
            continue
        assert again["userErrors"] == []
        if request.name == "refund":
            assert again["reversal"]["replayed"] is True
            assert again["reversal"]["clawback"] == request.acknowledged["reversal"]["clawback"]
        elif request.acknowledged["entry"] is not None:
            assert again["replayed"] is True
            assert again["entry"] == request.acknowledged["entry"]


async def check_exactly_once(db: Database, load: Load) -> None:
    """Each acknowledged request that posted is in the ledger once; no request twice."""
    for request in load.sent:
        found = await committed(db, request)
        if request.acknowledged is not None and (
            request.name == "refund" or request.acknowledged["entry"] is not None
        ):
            assert found == 1, request
        else:
            assert found <= 1, request
    assert await verify_ledger(db) == []
