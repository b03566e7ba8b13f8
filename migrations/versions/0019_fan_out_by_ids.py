"""outbox fan-out: the batch's ids first, so the statement keeps one plan

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-26 03:00:00
"""

from collections.abc import Sequence

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    execute((SQL_DIR / "0019_fan_out_by_ids.sql").read_text())


def downgrade() -> None:
    execute(definition("0015_numbered_at_fan_out.sql", "outbox_fan_out"))
