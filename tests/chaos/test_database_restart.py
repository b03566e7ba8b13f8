"""PostgreSQL restarts under load: clients get clean retryable answers (503 with
Retry-After, never a 500 or a stack trace), the service recovers by itself once the
database is back, and nothing acknowledged is lost or doubled.

The database is an embedded PostgreSQL of this test's own (the shared test database
stays up for the other tests). ALLIANCE_SLOW=1 runs longer with two restarts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import THROWAWAY, EmbeddedPostgres
from alliance.db.engine import Database
from tests.chaos.harness import (
    check_exactly_once,
    client_loop,
    free_port,
    resend_all,
    server,
    setup,
    until_ready,
)

pytestmark = pytest.mark.slow
SLOW = os.environ.get("ALLIANCE_SLOW") == "1"
CLIENTS = 16 if SLOW else 6
RESTARTS = 2 if SLOW else 1
DOWN_SECONDS = 2.0


@pytest.fixture
async def own_database(settings: Settings) -> AsyncIterator[tuple[EmbeddedPostgres, Database]]:
    root = Path(tempfile.mkdtemp(prefix="alliance-restart-"))
    postgres = EmbeddedPostgres(root / "pg", settings=THROWAWAY, max_connections=100)
    postgres.start()
    try:
        postgres.create_database("restart")
        url = postgres.url("restart")
        migrate.upgrade(url)
        db = Database(url, settings)
        try:
            yield postgres, db
        finally:
            await db.dispose()
    finally:
        postgres.destroy()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_database_restart_under_load(
    own_database: tuple[EmbeddedPostgres, Database],
) -> None:
    postgres, db = own_database
    port = free_port()
    load = await setup(db, port)
    async with httpx.AsyncClient(base_url=load.url, timeout=30) as client:
        with server(db, port) as process:
            await until_ready(client, process)
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(client_loop(client, load, n, stop)) for n in range(CLIENTS)
            ]
            back_at = 0.0
            for _ in range(RESTARTS):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(postgres.stop)  # fast shutdown: sessions cut
                await asyncio.sleep(DOWN_SECONDS)
                await asyncio.to_thread(postgres.start)
                back_at = time.monotonic()
            # The service recovers by itself: acknowledgements resume, no restart of ours.
            deadline = back_at + 20
            while not any((r.acknowledged_at or 0) > back_at for r in load.sent):
                assert time.monotonic() < deadline, "the service did not recover"
                assert process.poll() is None, "the server died with its database"
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)
            assert load.unavailable > 0, "the clients met the outage"
            assert load.without_retry_after == 0
            await resend_all(client, load)
    # This process's own pool still holds sessions the restart cut: check on fresh ones.
    fresh = Database(db.url, db.settings)
    try:
        await check_exactly_once(fresh, load)
    finally:
        await fresh.dispose()
