"""Connection pools and the ways a use case talks to PostgreSQL.

- `db.transaction()`: an ORM session inside BEGIN … COMMIT, for use cases with
  several statements (cold paths: onboarding, enrolment).
- `db.fetch_all()` / `db.fetch_one()`: one statement on an autocommit psycopg
  connection, for the hot paths: every ledger movement is one call of a
  PL/pgSQL function (the statement *is* the transaction), and every read. No
  BEGIN/COMMIT round trips, no ORM, no greenlet bridge: this is the path the
  benchmarks measure. The SQL is still built with SQLAlchemy (see `compiled.py`).
- `db.autocommit()`: a SQLAlchemy Core connection without a transaction, for
  cold reads that are easier to write inline (verify, the CLI, the demo).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alliance.config import Settings
from alliance.db.shared_reads import SharedReads

Row = tuple[Any, ...]


async def _configure(connection: psycopg.AsyncConnection[Any]) -> None:
    # json/jsonb columns (earn breakdowns, caps) parsed by orjson: several times faster.
    set_json_loads(orjson.loads, connection)


class LifoConnectionPool(AsyncConnectionPool):
    """psycopg's pool, handing out the most recently returned connection first.

    The stock pool is FIFO, so consecutive requests visit every connection in
    turn: each lands on a PostgreSQL backend whose caches have gone cold, which
    cost PostgreSQL ~0.3 ms more CPU per earn than one warm backend (measured
    with bench/: 0.79 vs 0.47 ms). LIFO keeps the busy few warm; the rest idle.
    """

    async def _get_ready_connection(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        if self._pool and (timeout is None or timeout > 0.0):
            connection = self._pool.pop()
            self._nconns_min = min(self._nconns_min, len(self._pool))
            return connection
        return await super()._get_ready_connection(timeout)


# The override above relies on these internals of psycopg_pool; fail loudly if they move.
assert hasattr(AsyncConnectionPool, "_get_ready_connection")


class Database:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        options = (
            f"-c statement_timeout={settings.statement_timeout_ms}"
            " -c idle_in_transaction_session_timeout=60000 -c TimeZone=UTC"
        )
        # libpq's own variable names a process's sessions in pg_stat_activity.
        application_name = os.environ.get("PGAPPNAME") or "points-alliance"
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=settings.session_pool_size,
            max_overflow=settings.session_pool_size,
            pool_timeout=settings.pool_timeout_seconds,
            pool_recycle=1800,
            connect_args={"options": options, "application_name": application_name},
        )
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # A fixed-size pool: connections that come and go under load cost more
        # than the requests they serve (seen as overflow churn in bench/RESULTS.md).
        self.pool = LifoConnectionPool(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            min_size=settings.pool_size,
            max_size=settings.pool_size,
            timeout=settings.pool_timeout_seconds,
            open=False,
            kwargs={
                "autocommit": True,
                "options": options,
                "application_name": application_name,
                # Hot statements are few and repeated: prepare them on first use.
                "prepare_threshold": 0,
            },
            name="alliance",
            configure=_configure,
        )
        # Shared reads (shared_reads.py) go through connections of their own where
        # PostgreSQL always uses a statement's generic plan. A shared statement's keys
        # are arrays of a different length at every call, so the plan cache compared
        # each generic plan with custom plans of small batches and often kept planning
        # anew: a third of the balance read's statements were planned, 42 % of their
        # cost in PostgreSQL (bench/RESULTS.md, 2026-11-26). Their plan never depends on
        # the values: each key's rows are read by the same lateral statement.
        # Few: at most one statement of each shape is on its way at once.
        shared_size = max(2, settings.pool_size // 4)
        self.shared_pool = LifoConnectionPool(
            self.pool.conninfo,
            min_size=shared_size,
            max_size=shared_size,
            timeout=settings.pool_timeout_seconds,
            open=False,
            kwargs={
                "autocommit": True,
                "options": f"{options} -c plan_cache_mode=force_generic_plan",
                "application_name": application_name,
                "prepare_threshold": 0,
            },
            name="alliance-shared-reads",
            configure=_configure,
        )
        self._opening: asyncio.Lock | None = None
        self._shared_reads = SharedReads(self._fetch_shared) if settings.shared_reads else None
        self._observers: list[Callable[[str], None]] = []

    async def open(self) -> None:
        """Open the hot pool now (the gateway does, in its lifespan); idempotent."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.pool.closed:
                await self.pool.open(
                    wait=True, timeout=max(30.0, self.settings.pool_timeout_seconds)
                )
            if self._shared_reads is not None and self.shared_pool.closed:
                await self.shared_pool.open(
                    wait=True, timeout=max(30.0, self.settings.pool_timeout_seconds)
                )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        if self.pool.closed:
            await self.open()
        async with self.pool.connection() as conn:
            yield conn

    # The two hot paths take a connection with getconn/putconn rather than through
    # `connection()`: its two context managers, and the connection's own (a COMMIT check
    # that autocommit makes moot), cost ~10 µs a statement. putconn still resets or
    # discards a connection left in a transaction or broken.

    async def fetch_all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await self._fetch_all(self.pool, sql, params)

    async def _fetch_shared(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """`fetch_all` on the shared reads' connections (generic plans)."""
        return await self._fetch_all(self.shared_pool, sql, params)

    async def _fetch_all(
        self, pool: AsyncConnectionPool, sql: str, params: Mapping[str, Any] | None
    ) -> list[Row]:
        self._observe(sql)
        if pool.closed:
            await self.open()
        conn = await pool.getconn()
        try:
            cursor = await conn.execute(sql, params, prepare=True)
            return await cursor.fetchall()
        finally:
            await pool.putconn(conn)

    async def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        self._observe(sql)
        if self.pool.closed:
            await self.open()
        conn = await self.pool.getconn()
        try:
            cursor = await conn.execute(sql, params, prepare=True)
            return await cursor.fetchone()
        finally:
            await self.pool.putconn(conn)

    async def read(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        """`fetch_all` for a read that may share its round trip with the same statement
        asked by concurrent requests (see `shared_reads.py`). Never a write."""
        if self._shared_reads is None:
            return await self.fetch_all(sql, params)
        return await self._shared_reads.read(sql, params)

    def submit(self, sql: str, params: Mapping[str, Any]) -> asyncio.Future[list[Row]]:
        """`read` as a future, for callers that wait by callback rather than by a task
        of their own (the GraphQL loaders). Never a write."""
        if self._shared_reads is None:
            return asyncio.get_running_loop().create_task(self.fetch_all(sql, params))
        return self._shared_reads.submit(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One database transaction: committed on success, rolled back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        async with self._autocommit_engine.connect() as connection:
            yield connection

    async def dispose(self) -> None:
        await self.shared_pool.close()
        await self.pool.close()
        await self.engine.dispose()

    def count_statements(self) -> StatementCounter:
        return StatementCounter(self)

    def _observe(self, sql: str) -> None:
        for observer in self._observers:
            observer(sql)


class StatementCounter:
    """Counts SQL statements sent through this database, on either pool (tests assert on it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._engine = db.engine.sync_engine
        self.statements: list[str] = []

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self._engine, "before_cursor_execute", self._before)
        self._db._observers.append(self.statements.append)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before)
        self._db._observers.remove(self.statements.append)

    @property
    def count(self) -> int:
        return len(self.statements)
