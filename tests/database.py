"""Resetting the test database between tests, after checking the ledger."""

from __future__ import annotations

from sqlalchemy import text

from alliance.db.engine import Database
from alliance.db.registry import metadata
from alliance.ledger.verify import verify_ledger
from alliance.rules.service import forget_cached
from alliance.tiers.service import forget_cached as forget_cached_ladders

_TABLES = ", ".join(f'"{table.name}"' for table in reversed(metadata.sorted_tables))


async def verify_and_reset(db: Database) -> None:
    """Fail if any ledger invariant is broken; empty every table either way."""
    violations = await verify_ledger(db)
    async with db.autocommit() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    forget_cached()
    forget_cached_ladders()
    assert not violations, "ledger invariants broken by this test:\n" + "\n".join(
        f"  {v.check}: {v.detail}" for v in violations
    )


async def corrupt(db: Database, statement: str) -> None:
    """Run `statement` with triggers off, the way a bad manual fix would (verify tests)."""
    async with db.autocommit() as conn:
        await conn.execute(text("SET session_replication_role = replica"))
        try:
            await conn.execute(text(statement))
        finally:
            await conn.execute(text("SET session_replication_role = DEFAULT"))
