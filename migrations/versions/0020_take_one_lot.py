"""ledger_take_lots: a debit of one lot by its primary key, with a plan kept

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-26 11:00:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    execute((SQL_DIR / "0020_take_one_lot.sql").read_text())


def downgrade() -> None:
    execute(definition("0012_lots.sql", "ledger_take_lots"))
