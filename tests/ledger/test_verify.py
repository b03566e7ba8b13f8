"""`alliance verify` finds deliberately corrupted rows, and exits non-zero on them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.ledger.verify import verify_ledger
from tests.database import corrupt
from tests.factories import give_points, make_membership, make_program

CORRUPTIONS = {
    # Bypass the guards the way a bad manual fix would: triggers off for this session.
    "balance_equals_postings": "UPDATE account SET balance = balance + 5 WHERE kind = 'member'",
    "balance_equals_lots": "UPDATE lot SET remaining = remaining - 1",
    "balanced_transactions": "UPDATE posting SET amount = amount + 1 WHERE balance_after IS NULL",
    "running_balance": "UPDATE posting SET balance_after = balance_after + 1"
    " WHERE balance_after IS NOT NULL",
    "transactions_have_postings": "DELETE FROM posting WHERE balance_after IS NULL",
    "balance_after_on_member_legs_only": "UPDATE posting SET balance_after = NULL"
    " WHERE id = (SELECT min(id) FROM posting WHERE balance_after IS NOT NULL)",
    "lots_on_their_accounts": "UPDATE lot SET program_id = program_id + 1000",
    "debt_equals_clawback_postings": "UPDATE account SET debt = 3 WHERE kind = 'member'",
    "debits_consume_lots": "INSERT INTO lot_consumption SELECT transaction_id, id, 1 FROM lot",
    # More orphans in tests/ledger/test_references.py.
    "ledger_references_exist": "UPDATE lot SET account_id = account_id + 1000000",
}


async def _ledger_with_history(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 40)


async def _repair(db: Database) -> None:
    """Empty the ledger so the test's teardown check sees a consistent database."""
    async with db.autocommit() as conn:
        await conn.execute(
            text("TRUNCATE lot_consumption, lot, posting, ledger_transaction, outbox_event CASCADE")
        )
        await conn.execute(text("UPDATE account SET balance = 0, debt = 0 WHERE kind = 'member'"))


async def test_clean_ledger_has_no_violations(db: Database) -> None:
    await _ledger_with_history(db)
    assert await verify_ledger(db) == []


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
async def test_verify_finds_corruption(db: Database, check: str) -> None:
    await _ledger_with_history(db)
    await corrupt(db, CORRUPTIONS[check])
    found = {violation.check for violation in await verify_ledger(db)}
    await _repair(db)
    assert check in found


async def test_cli_exit_status(db: Database) -> None:
    await _ledger_with_history(db)
    env = os.environ | {"ALLIANCE_DATABASE_URL": db.url, "ALLIANCE_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "alliance", "verify"]
    clean = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    assert clean.returncode == 0, clean.stderr
    assert "invariants hold" in clean.stdout
    await corrupt(db, CORRUPTIONS["balance_equals_postings"])
    broken = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )
    await _repair(db)
    assert broken.returncode == 1
    assert "balance_equals_postings" in broken.stderr
