"""earning functions: earns with caps, action claims, referrals and reversals, feeding tiers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0005_earning.sql"


def upgrade() -> None:
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0005_earning_down.sql").read_text()
    )
