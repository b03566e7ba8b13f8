"""Bulk import from a merchant's previous system: members, then opening balances.

Each import is one database transaction: the CSV file is streamed into a TEMP
staging table with COPY (each row keeps its line number), checked set-based in
SQL, and written set-based only if no row is bad. Re-running a file is a no-op.
"""

from alliance.imports.balances import import_balances
from alliance.imports.errors import ImportRejected, RowError, RowProblem
from alliance.imports.members import import_members
from alliance.imports.staging import ImportReport

__all__ = [
    "ImportRejected",
    "ImportReport",
    "RowError",
    "RowProblem",
    "import_balances",
    "import_members",
]
