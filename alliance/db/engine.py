"""Connection pools and the two ways a use case talks to PostgreSQL.

- `db.transaction()`: an ORM session inside BEGIN … COMMIT, for use cases with
  several statements (cold paths: onboarding, enrolment).
- `db.autocommit()`: a Core connection without BEGIN/COMMIT round trips, for
  use cases that are one statement (every ledger movement is a single call of
  a PL/pgSQL function, so the statement *is* the transaction) and for reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alliance.config import Settings


class Database:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.pool_overflow,
            pool_timeout=settings.pool_timeout_seconds,
            pool_pre_ping=False,
            pool_recycle=1800,
            connect_args={
                "options": f"-c statement_timeout={settings.statement_timeout_ms}"
                f" -c idle_in_transaction_session_timeout=60000"
                f" -c TimeZone=UTC",
                "application_name": "points-alliance",
            },
        )
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

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
        await self.engine.dispose()

    def count_statements(self) -> StatementCounter:
        return StatementCounter(self)


class StatementCounter:
    """Counts SQL statements sent through this database (tests assert on it)."""

    def __init__(self, db: Database) -> None:
        self._engine = db.engine.sync_engine
        self.statements: list[str] = []

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self._engine, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before)

    @property
    def count(self) -> int:
        return len(self.statements)
