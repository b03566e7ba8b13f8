"""A posting's and a lot's transaction and account exist: no foreign keys (migration 0016),
but triggers that check each statement's new rows, a few rows by index probes and many by
a query planned for them; what they name cannot go away; verify finds an orphan planted
past the triggers."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.ledger.verify import verify_ledger
from tests.database import corrupt
from tests.factories import give_points, make_membership, make_program

MISSING = 10**12
# One transaction's legs or lots copied `n` times, naming {transaction} and {account}: a
# copy of balanced legs is balanced. n = 1: checked by the cached plan of a movement's few
# rows; n = 70 (140 postings, 70 lots, over 64): by a query planned for the statement.
COPY_POSTINGS = """
INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount, balance_after)
SELECT {transaction}, {account}, p.program_id, p.member_id, p.amount, p.balance_after
  FROM posting p CROSS JOIN generate_series(1, %(n)s)
 WHERE p.transaction_id = %(t)s
"""
COPY_LOTS = """
INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                 available_at, expires_at)
SELECT {account}, l.program_id, l.member_id, {transaction}, l.amount, l.remaining,
       l.available_at, l.expires_at
  FROM lot l CROSS JOIN generate_series(1, %(n)s)
 WHERE l.transaction_id = %(t)s
"""
SIZES = [1, 70]


async def _movement(db: Database) -> int:
    program = await make_program(db)
    membership = await make_membership(db, program)
    movement = await give_points(db, membership, program, 40)
    return movement.transaction_id


async def _refused(db: Database, sql: str, params: dict[str, int]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as refused:
        async with db.connection() as conn:
            await conn.execute(sql, params)
    return refused.value


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("table", ["posting", "lot"])
async def test_unknown_transaction_is_refused(db: Database, table: str, n: int) -> None:
    transaction = await _movement(db)
    sql = COPY_POSTINGS if table == "posting" else COPY_LOTS
    refused = await _refused(
        db, sql.format(transaction=MISSING, account=f"{table[0]}.account_id"),
        {"n": n, "t": transaction},
    )  # fmt: skip
    assert refused.sqlstate == "23503"
    assert f"{table} names ledger transaction {MISSING}, which does not exist" in str(refused)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("table", ["posting", "lot"])
async def test_unknown_account_is_refused(db: Database, table: str, n: int) -> None:
    transaction = await _movement(db)
    sql = COPY_POSTINGS if table == "posting" else COPY_LOTS
    refused = await _refused(
        db, sql.format(transaction=f"{table[0]}.transaction_id", account=MISSING),
        {"n": n, "t": transaction},
    )  # fmt: skip
    assert refused.sqlstate == "23503"
    assert f"{table} names account {MISSING}, which does not exist" in str(refused)


@pytest.mark.parametrize("n", SIZES)
async def test_known_references_pass(db: Database, n: int) -> None:
    """Rows naming what exists pass, both ways of checking (rolled back: the copies would
    break the balances)."""
    transaction = await _movement(db)
    async with db.connection() as conn, conn.transaction(force_rollback=True):
        for sql in (COPY_POSTINGS, COPY_LOTS):
            statement = sql.format(transaction="transaction_id", account="account_id")
            cursor = await conn.execute(statement, {"n": n, "t": transaction})
            assert cursor.rowcount in (n, 2 * n)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM account WHERE kind = 'issued'",
        "DELETE FROM account WHERE kind = 'redeemed'",  # no posting names it: refused all the same
        "UPDATE account SET id = id + 1000000 WHERE kind = 'member'",
        "UPDATE lot SET account_id = (SELECT min(id) FROM account)",
        "UPDATE lot SET transaction_id = transaction_id",
    ],
)
async def test_what_the_ledger_names_stays(db: Database, statement: str) -> None:
    await _movement(db)
    with pytest.raises(psycopg.Error, match="a reference of the ledger would change") as refused:
        async with db.connection() as conn:
            await conn.execute(statement)
    assert refused.value.sqlstate == "LA500"


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE posting SET account_id = {MISSING} WHERE balance_after IS NULL",
        f"UPDATE posting SET transaction_id = {MISSING}",
        f"UPDATE lot SET account_id = {MISSING}",
        f"UPDATE lot SET transaction_id = {MISSING}",
        "DELETE FROM ledger_transaction",
    ],
)
async def test_verify_finds_an_orphan(db: Database, statement: str) -> None:
    await _movement(db)
    await corrupt(db, statement)
    found = {violation.check for violation in await verify_ledger(db)}
    async with db.autocommit() as conn:  # an empty ledger again, for the teardown check
        await conn.execute(
            text("TRUNCATE lot_consumption, lot, posting, ledger_transaction, outbox_event CASCADE")
        )
        await conn.execute(text("UPDATE account SET balance = 0, debt = 0 WHERE kind = 'member'"))
    assert "ledger_references_exist" in found
