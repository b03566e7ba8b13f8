"""ledger_earn answers its breakdown only when caps changed it

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 01:20:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0017_earn_as_sent.sql"


def upgrade() -> None:
    execute(SQL.read_text())


def downgrade() -> None:
    execute(definition("0005_earning.sql", "ledger_earn"))
