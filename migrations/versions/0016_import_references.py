"""postings' and lots' references checked per statement, not per row; account fillfactor 50

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 00:45:00
"""

from collections.abc import Sequence

from alembic import op

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0016_import.sql"

# The foreign keys the statement-level checks of the script replace: (table, column,
# referenced table).
REPLACED_KEYS = (
    ("posting", "transaction_id", "ledger_transaction"),
    ("posting", "account_id", "account"),
    ("lot", "transaction_id", "ledger_transaction"),
    ("lot", "account_id", "account"),
)


def _key(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def upgrade() -> None:
    for table, column, referred in REPLACED_KEYS:
        op.drop_constraint(_key(table, column, referred), table, type_="foreignkey")
    execute(SQL.read_text())
    # Room for every account row of a page to be updated once in one transaction (an
    # import credits each account, an expiry batch debits many) and every update still
    # be HOT: 37 rows of ~108 bytes fill half a page, their 37 new versions the rest.
    # At 70 only ~24 of a page's ~52 rows could be, and each other update wrote three
    # index entries. A movement's single update was HOT at 70 already (pruning frees
    # the page between transactions). Applies to pages filled from now on.
    op.execute("ALTER TABLE account SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE account SET (fillfactor = 70)")
    execute(
        "DROP TRIGGER lot_keeps_its_references ON lot;"
        " DROP TRIGGER account_keeps_its_key ON account;"
        " DROP FUNCTION ledger_reject_reference_change();"
        " DROP TRIGGER lot_references ON lot;"
        " DROP FUNCTION lot_check_references();"
    )
    execute(definition("0001_ledger.sql", "posting_check_balanced"))
    for table, column, referred in REPLACED_KEYS:
        op.create_foreign_key(_key(table, column, referred), table, referred, [column], ["id"])
