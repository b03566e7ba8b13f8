"""Pool exhaustion on the real server: requests that cannot get a database connection in
time get a clean 503 with Retry-After (never a 500), and the service carries on by
itself once connections are free again. Nothing is doubled by the clients' retries."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from alliance.db.engine import Database
from tests.chaos.harness import (
    AWARD,
    Request,
    check_exactly_once,
    free_port,
    resend_all,
    send,
    server,
    setup,
    until_ready,
)

pytestmark = pytest.mark.slow


async def test_pool_exhaustion_is_a_clean_503(db: Database) -> None:
    port = free_port()
    load = await setup(db, port)
    hot = load.memberships[0]
    async with httpx.AsyncClient(base_url=load.url, timeout=30) as client:
        # One connection per worker, half a second to wait for it.
        with server(db, port, pool_size="1", pool_timeout="0.5") as process:
            await until_ready(client, process)
            # Hold the hot member's account row: the awards that reach it wait on the lock
            # with their worker's only connection, and the requests behind them on the pool.
            conninfo = db.url.replace("postgresql+psycopg://", "postgresql://")
            async with await psycopg.AsyncConnection.connect(conninfo) as blocker:
                await blocker.execute(
                    "SELECT 1 FROM account a JOIN membership m ON m.id = a.membership_id"
                    " WHERE m.id = %s FOR UPDATE", (int(_pk(hot)),),
                )  # fmt: skip
                requests = [
                    Request("award", AWARD, {"input": {
                        "membershipId": hot, "points": 1, "reason": "pool",
                        "idempotencyKey": f"p{n}"}}, load.client_id, f"p{n}")
                    for n in range(12)
                ]  # fmt: skip
                load.sent.extend(requests)
                pending = [asyncio.create_task(send(client, load, r)) for r in requests]
                await asyncio.sleep(2.0)
                await blocker.rollback()  # the lock goes: the waiting awards complete
            answers = await asyncio.gather(*pending)
            for request, payload in zip(requests, answers, strict=True):
                if payload is not None:
                    request.acknowledged = payload
                    request.acknowledged_at = time.monotonic()
            assert load.unavailable > 0, "some requests found no connection in time"
            assert load.without_retry_after == 0
            assert any(payload is not None for payload in answers), "the lock holders finished"
            await resend_all(client, load)  # the clients' retries, now that it is free
    await check_exactly_once(db, load)


def _pk(global_id: str) -> str:
    from strawberry import relay

    return relay.GlobalID.from_id(global_id).node_id
