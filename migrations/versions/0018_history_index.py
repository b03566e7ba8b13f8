"""the history index carries account, program and time: history pages read it alone

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-26 02:00:00

A history page (a membership's or a member's entries, newest first) filters a member's
postings by account, and by program and time when asked. PostgreSQL estimated the
postings of one account among a member's to be a handful, so it read every posting of
the member with its transaction and sorted them (5-9 ms for 660 postings, growing with
the history). With these columns in the index the page's ids come from an index-only
scan read backwards and stopped at the page size (alliance/members/queries.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _history_index(include: list[str]) -> None:
    op.drop_index("ix_posting_member_history", table_name="posting")
    op.create_index(
        "ix_posting_member_history",
        "posting",
        ["member_id", sa.text("id DESC")],
        postgresql_where=sa.text("balance_after IS NOT NULL"),
        postgresql_include=include,
    )


def upgrade() -> None:
    _history_index(["account_id", "program_id", "created_at"])


def downgrade() -> None:
    _history_index([])
