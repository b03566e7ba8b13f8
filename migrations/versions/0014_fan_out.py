"""the webhook fan-out as one function call: outbox_fan_out

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 23:05:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, execute

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0014_fan_out.sql"


def upgrade() -> None:
    execute(SQL.read_text())


def downgrade() -> None:
    execute("DROP FUNCTION outbox_fan_out(integer);")
