"""Test database: one real PostgreSQL per xdist worker, migrated once, truncated after each test.

With ALLIANCE_TEST_DATABASE_URL the tests use that server (a database per worker
is created and dropped there); otherwise each worker starts its own embedded
PostgreSQL in a temporary directory. Truncation rather than a rolled-back outer
transaction keeps real commits, which the concurrency tests need. After every
test the ledger invariants are verified: a test that corrupts the ledger fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import THROWAWAY, EmbeddedPostgres
from alliance.db.engine import Database
from tests.database import verify_and_reset

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

TEST_SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LXRlc3Qtc2VjcmV0LWtleSE="  # 32 bytes, tests only


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    external = os.environ.get("ALLIANCE_TEST_DATABASE_URL")
    name = f"alliance_test_{_worker()}"
    if external:
        admin = create_engine(
            make_url(external).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        rendered = (
            make_url(external)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
        migrate.upgrade(rendered)
        yield rendered
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        return
    root = Path(tempfile.mkdtemp(prefix="alliance-test-"))
    server = EmbeddedPostgres(root / "pg", settings=THROWAWAY, max_connections=300)
    server.start()
    try:
        server.create_database(name)
        migrate.upgrade(server.url(name))
        yield server.url(name)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        secret_key=TEST_SECRET_KEY,
        access_log=False,
        pool_size=20,
        session_pool_size=10,
    )


@pytest.fixture(scope="session")
async def session_db(database_url: str, settings: Settings) -> AsyncIterator[Database]:
    db = Database(database_url, settings)
    yield db
    await db.dispose()


@pytest.fixture
async def db(session_db: Database) -> AsyncIterator[Database]:
    """The test database, emptied after the test once the ledger has been verified."""
    yield session_db
    await verify_and_reset(session_db)
