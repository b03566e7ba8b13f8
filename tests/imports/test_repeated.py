"""Many imports in a row on the same pooled connection (new temporary tables each time)."""

from __future__ import annotations

from alliance.db.engine import Database
from alliance.imports import import_balances, import_members
from tests.factories import OPERATOR, make_program
from tests.imports.helpers import counts, csv_file


async def test_twelve_imports_in_a_row(db: Database) -> None:
    program = await make_program(db)
    for n in range(12):
        members = csv_file(f"member_number\nM{n}\n")
        balances = csv_file(f"member_number,points\nM{n},{n + 1}\n")
        await import_members(db, OPERATOR, program_id=program.id, source=members)
        await import_balances(db, OPERATOR, program_id=program.id, source=balances)
    assert (await counts(db))["points"] == sum(range(1, 13))
