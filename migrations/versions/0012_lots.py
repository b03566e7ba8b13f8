"""lots read only as far as needed: one debit, ledger_take_lots

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 22:40:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0012_lots.sql"

# The functions this migration replaces, and the script that wrote each before it.
REPLACED = {
    "ledger_consume_lots": "0006_holds.sql",
    "ledger_debit": "0007_exchange.sql",
    "ledger_spend": "0001_ledger.sql",
    "ledger_hold_authorize": "0006_holds.sql",
    "points_gift": "0009_rewards.sql",
}


def upgrade() -> None:
    execute(SQL.read_text())


def downgrade() -> None:
    for name, file in REPLACED.items():
        execute(definition(file, name))
    execute("DROP FUNCTION ledger_take_lots(bigint, bigint, bigint, bigint, boolean);")
