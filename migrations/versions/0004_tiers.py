"""member tiers: versioned ladders, each membership's tier and history, qualifying activity

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0004_tiers.sql"


def _created_at(name: str = "created_at") -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "tier_ladder",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _created_at(),
        sa.CheckConstraint("basis IN ('spend', 'points')", name=op.f("ck_tier_ladder_basis")),
        sa.CheckConstraint("version > 0", name=op.f("ck_tier_ladder_version_positive")),
        sa.CheckConstraint(
            "window_days BETWEEN 1 AND 3650 AND grace_days BETWEEN 0 AND 365",
            name=op.f("ck_tier_ladder_durations"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_tier_ladder_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_ladder")),
        sa.UniqueConstraint("program_id", "version", name="uq_tier_ladder_version"),
    )
    op.create_table(
        "tier",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ladder_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column("multiplier", sa.Numeric(precision=6, scale=2), nullable=False),
        sa.Column(
            "benefits",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint("rank BETWEEN 0 AND 9", name=op.f("ck_tier_rank")),
        sa.CheckConstraint(
            "threshold >= 0 AND (rank = 0) = (threshold = 0)", name=op.f("ck_tier_threshold")
        ),
        sa.CheckConstraint("multiplier >= 1", name=op.f("ck_tier_multiplier")),
        sa.CheckConstraint("jsonb_typeof(benefits) = 'array'", name=op.f("ck_tier_benefits_list")),
        sa.ForeignKeyConstraint(
            ["ladder_id"], ["tier_ladder.id"], name=op.f("fk_tier_ladder_id_tier_ladder")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_tier_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier")),
        sa.UniqueConstraint("ladder_id", "code", name="uq_tier_code"),
        sa.UniqueConstraint("ladder_id", "rank", name="uq_tier_rank"),
    )
    op.create_table(
        "membership_tier",
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("tier_id", sa.BigInteger(), nullable=True),
        sa.Column("downgrade_at", sa.DateTime(timezone=True), nullable=True),
        _created_at("updated_at"),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_membership_tier_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_membership_tier_program_id_program")
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["tier.id"], name=op.f("fk_membership_tier_tier_id_tier")
        ),
        sa.PrimaryKeyConstraint("membership_id", name=op.f("pk_membership_tier")),
    )
    op.create_table(
        "tier_change",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_tier_id", sa.BigInteger(), nullable=False),
        sa.Column("to_tier_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("qualifying_total", sa.Numeric(precision=20, scale=4), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "reason IN ('qualified', 'downgraded', 'ladder_changed')",
            name=op.f("ck_tier_change_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_tier_change_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_tier_change_program_id_program")
        ),
        sa.ForeignKeyConstraint(
            ["from_tier_id"], ["tier.id"], name=op.f("fk_tier_change_from_tier_id_tier")
        ),
        sa.ForeignKeyConstraint(
            ["to_tier_id"], ["tier.id"], name=op.f("fk_tier_change_to_tier_id_tier")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_change")),
    )
    op.create_index("ix_tier_change_membership", "tier_change", ["membership_id", "id"])
    op.create_table(
        "qualifying_activity",
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spend", sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_qualifying_activity_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_qualifying_activity_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint(
            "membership_id", "transaction_id", name=op.f("pk_qualifying_activity")
        ),
    )
    op.create_index(
        "ix_qualifying_activity_window",
        "qualifying_activity",
        ["membership_id", "occurred_at"],
        postgresql_include=["spend", "points"],
    )
    # Functions and triggers: sent as one simple-protocol script, untouched by bind parsing.
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0004_tiers_down.sql").read_text()
    )
    op.drop_index("ix_qualifying_activity_window", table_name="qualifying_activity")
    op.drop_table("qualifying_activity")
    op.drop_index("ix_tier_change_membership", table_name="tier_change")
    op.drop_table("tier_change")
    op.drop_table("membership_tier")
    op.drop_table("tier")
    op.drop_table("tier_ladder")
