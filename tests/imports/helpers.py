"""Import files in memory, and what the tests read back from the database."""

from __future__ import annotations

import io

from sqlalchemy import func, select, text

from alliance.db.engine import Database
from alliance.imports import ImportRejected, RowProblem
from alliance.ledger.models import LedgerTransaction, Lot, Posting
from alliance.members.models import Member, Membership


def csv_file(content: str | bytes, name: str = "import.csv") -> io.BytesIO:
    source = io.BytesIO(content.encode() if isinstance(content, str) else content)
    source.name = name
    return source


def problems(rejected: ImportRejected) -> list[tuple[int, RowProblem]]:
    """(line, problem) of each reported error, in report order."""
    return [(error.line, error.problem) for error in rejected.errors]


async def counts(db: Database) -> dict[str, int]:
    """Rows of every table an import writes to."""
    tables = {
        "member": Member,
        "membership": Membership,
        "ledger_transaction": LedgerTransaction,
        "posting": Posting,
        "lot": Lot,
    }
    async with db.autocommit() as conn:
        found = {
            name: int(await conn.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in tables.items()
        }
        for table in ("account", "audit_record", "outbox_event"):
            found[table] = int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
        found["points"] = int(
            await conn.scalar(text("SELECT coalesce(sum(balance), 0) FROM account")) or 0
        )
    return found
