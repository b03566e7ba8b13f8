"""partner rewards: a reward paid with another merchant's program's points

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.scripts import SQL_DIR, definition, execute

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = SQL_DIR / "0011_partner_rewards.sql"


def upgrade() -> None:
    # The program whose points pay: the reward's own, or a partner's.
    op.add_column("redemption", sa.Column("paid_program_id", sa.BigInteger()))
    op.execute("UPDATE redemption SET paid_program_id = program_id")
    op.alter_column("redemption", "paid_program_id", nullable=False)
    execute(SQL.read_text())


def downgrade() -> None:
    execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM redemption WHERE paid_program_id <> program_id)"
        " THEN RAISE EXCEPTION 'redemptions paid with partner points exist: 0010 cannot"
        " hold them'; END IF; END $$;"
        "DROP FUNCTION ledger_hold_capture(bigint, bigint, bigint, bigint, text, text, jsonb);"
        "DROP FUNCTION reward_partner_price(bigint, numeric, numeric);"
    )
    execute(definition("0006_holds.sql", "ledger_hold_capture"))
    for name in ("reward_reserve", "reward_redemption_locked", "reward_capture"):
        execute(definition("0009_rewards.sql", name))
    op.drop_column("redemption", "paid_program_id")
