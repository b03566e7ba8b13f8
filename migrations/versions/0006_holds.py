"""two-phase holds: points reserved on a member account, captured, voided or expired

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 19:05:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0006_holds.sql"


def upgrade() -> None:
    op.create_table(
        "hold",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), server_default="authorized", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_scope", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('discount', 'reward')", name=op.f("ck_hold_kind")),
        sa.CheckConstraint("points > 0", name=op.f("ck_hold_points_positive")),
        sa.CheckConstraint(
            "status IN ('authorized', 'captured', 'voided', 'expired')", name=op.f("ck_hold_status")
        ),
        sa.CheckConstraint(
            "(status = 'captured') = (captured IS NOT NULL AND transaction_id IS NOT NULL)"
            " AND (captured IS NULL OR captured BETWEEN 1 AND points)"
            " AND (status = 'authorized') = (closed_at IS NULL)",
            name=op.f("ck_hold_state_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_hold_account_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"], ["membership.id"], name=op.f("fk_hold_membership_id_membership")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_hold_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold")),
        sa.UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_hold_idempotency"),
    )
    op.create_index(
        "ix_hold_account_open",
        "hold",
        ["account_id"],
        postgresql_where=sa.text("status = 'authorized'"),
    )
    op.create_index(
        "ix_hold_expiring",
        "hold",
        ["expires_at", "id"],
        postgresql_where=sa.text("status = 'authorized'"),
    )
    op.add_column(
        "program",
        sa.Column("discount_max_share", sa.Numeric(4, 3), server_default="1", nullable=False),
    )
    op.add_column(
        "program",
        sa.Column("discount_min_points", sa.Integer(), server_default="1", nullable=False),
    )
    op.create_check_constraint(
        "discount_policy",
        "program",
        "discount_max_share > 0 AND discount_max_share <= 1 AND discount_min_points >= 1",
    )
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0006_holds_down.sql").read_text()
    )
    op.drop_index("ix_hold_expiring", table_name="hold")
    op.drop_index("ix_hold_account_open", table_name="hold")
    op.drop_table("hold")
    op.drop_constraint(op.f("ck_program_discount_policy"), "program", type_="check")
    op.drop_column("program", "discount_min_points")
    op.drop_column("program", "discount_max_share")
