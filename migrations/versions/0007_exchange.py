"""exchange rates, quotes, exchanges, partner acceptance; settlement obligations, periods,
statements

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 19:45:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0007_exchange.sql"

_KINDS_BEFORE = "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund')"
_KINDS = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption')"
)
_ACCOUNTS_BEFORE = (
    "kind IN ('member', 'issued', 'redeemed', 'expired', 'exchanged_out',"
    " 'exchanged_in', 'adjustment', 'held', 'clawback')"
)
_ACCOUNTS = (
    "kind IN ('member', 'issued', 'redeemed', 'expired', 'exchanged_out',"
    " 'exchanged_in', 'adjustment', 'held', 'clawback', 'fee')"
)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    _replace_check("ledger_transaction", "kind", _KINDS)
    _replace_check("account", "kind", _ACCOUNTS)
    op.execute("INSERT INTO account (program_id, kind) SELECT id, 'fee' FROM program ORDER BY id")
    op.create_table(
        "settlement_calendar",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("cadence", sa.Text(), server_default="daily", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "cadence IN ('daily', 'weekly', 'monthly')", name=op.f("ck_settlement_calendar_cadence")
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_settlement_calendar_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_calendar")),
    )
    op.create_table(
        "settlement_period",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cadence", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("watermark", sa.BigInteger(), nullable=False),
        sa.Column("previous_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_watermark", sa.BigInteger(), nullable=False),
        sa.Column("obligations", sa.BigInteger(), nullable=True),
        sa.Column("run_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_at IS NOT NULL)",
            name=op.f("ck_settlement_period_closed_shape"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'closed')", name=op.f("ck_settlement_period_status")
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_settlement_period_window")),
        sa.CheckConstraint(
            "watermark >= previous_watermark", name=op.f("ck_settlement_period_watermark_monotone")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_period")),
        sa.UniqueConstraint("starts_at", name=op.f("uq_settlement_period_starts_at")),
    )
    op.create_table(
        "settlement_statement",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("period_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("receivable", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("payable", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("net", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("rounding", sa.Numeric(precision=28, scale=6), nullable=False),
        sa.Column("dispute_reason", sa.Text(), nullable=True),
        sa.Column("payment_reference", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(status = 'paid') = (payment_reference IS NOT NULL)",
            name=op.f("ck_settlement_statement_paid_shape"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'issued', 'confirmed', 'disputed', 'paid')",
            name=op.f("ck_settlement_statement_status"),
        ),
        sa.CheckConstraint("net = receivable - payable", name=op.f("ck_settlement_statement_net")),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_settlement_statement_merchant_id_merchant"),
        ),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["settlement_period.id"],
            name=op.f("fk_settlement_statement_period_id_settlement_period"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_statement")),
        sa.UniqueConstraint(
            "period_id",
            "merchant_id",
            name="uq_settlement_statement_party",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(
        "ix_settlement_statement_merchant",
        "settlement_statement",
        ["merchant_id", sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_table(
        "exchange_opt_out",
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("from_program_id", sa.BigInteger(), nullable=False),
        sa.Column("to_program_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["from_program_id"],
            ["program.id"],
            name=op.f("fk_exchange_opt_out_from_program_id_program"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchant.id"], name=op.f("fk_exchange_opt_out_merchant_id_merchant")
        ),
        sa.ForeignKeyConstraint(
            ["to_program_id"],
            ["program.id"],
            name=op.f("fk_exchange_opt_out_to_program_id_program"),
        ),
        sa.PrimaryKeyConstraint(
            "merchant_id", "from_program_id", "to_program_id", name=op.f("pk_exchange_opt_out")
        ),
    )
    op.create_table(
        "exchange_rate",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("from_program_id", sa.BigInteger(), nullable=False),
        sa.Column("to_program_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("numerator", sa.BigInteger(), nullable=False),
        sa.Column("denominator", sa.BigInteger(), nullable=False),
        sa.Column(
            "fee_percent", sa.Numeric(precision=7, scale=4), server_default="0", nullable=False
        ),
        sa.Column("fee_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("min_points", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("max_points", sa.BigInteger(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("published_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "fee_percent >= 0 AND fee_percent < 100 AND fee_points >= 0",
            name=op.f("ck_exchange_rate_fee"),
        ),
        sa.CheckConstraint(
            "from_program_id <> to_program_id", name=op.f("ck_exchange_rate_distinct_programs")
        ),
        sa.CheckConstraint(
            "min_points >= 1 AND (max_points IS NULL OR max_points >= min_points)",
            name=op.f("ck_exchange_rate_limits"),
        ),
        sa.CheckConstraint(
            "numerator > 0 AND denominator > 0", name=op.f("ck_exchange_rate_rate_positive")
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from", name=op.f("ck_exchange_rate_window")
        ),
        sa.ForeignKeyConstraint(
            ["from_program_id"],
            ["program.id"],
            name=op.f("fk_exchange_rate_from_program_id_program"),
        ),
        sa.ForeignKeyConstraint(
            ["to_program_id"], ["program.id"], name=op.f("fk_exchange_rate_to_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_rate")),
        sa.UniqueConstraint(
            "from_program_id", "to_program_id", "version", name="uq_exchange_rate_version"
        ),
    )
    op.create_table(
        "partner_acceptance",
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("min_points", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("max_points", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "min_points >= 1 AND (max_points IS NULL OR max_points >= min_points)",
            name=op.f("ck_partner_acceptance_limits"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_partner_acceptance_merchant_id_merchant"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_partner_acceptance_program_id_program")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "program_id", name=op.f("pk_partner_acceptance")),
    )
    op.create_table(
        "settlement_line",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("statement_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("counterparty_merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("obligation_kind", sa.Text(), nullable=True),
        sa.Column("debtor_merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("creditor_merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("obligations", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("exact_amount", sa.Numeric(precision=28, scale=6), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.CheckConstraint(
            "kind IN ('receivable', 'payable', 'bilateral_net', 'rounding', 'multilateral_net')",
            name=op.f("ck_settlement_line_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["counterparty_merchant_id"],
            ["merchant.id"],
            name=op.f("fk_settlement_line_counterparty_merchant_id_merchant"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["settlement_statement.id"],
            name=op.f("fk_settlement_line_statement_id_settlement_statement"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_line")),
        sa.UniqueConstraint("statement_id", "position", name="uq_settlement_line_position"),
    )
    op.create_index(
        op.f("ix_settlement_line_statement_id"), "settlement_line", ["statement_id"], unique=False
    )
    op.create_table(
        "settlement_obligation",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("debtor_merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("creditor_merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("point_value", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("amount", sa.Numeric(precision=28, scale=6), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'exchange_fee') = (creditor_merchant_id IS NULL) AND debtor_merchant_id IS DISTINCT FROM creditor_merchant_id",
            name=op.f("ck_settlement_obligation_parties"),
        ),
        sa.CheckConstraint(
            "kind IN ('exchange', 'exchange_fee', 'partner_redemption')",
            name=op.f("ck_settlement_obligation_kind"),
        ),
        sa.CheckConstraint(
            "points > 0 AND amount = points * point_value",
            name=op.f("ck_settlement_obligation_amount"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_obligation")),
    )
    op.create_index(
        "ix_settlement_obligation_occurred",
        "settlement_obligation",
        ["occurred_at", "id"],
        unique=False,
    )
    op.create_table(
        "exchange_quote",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("to_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("rate_id", sa.BigInteger(), nullable=False),
        sa.Column("points_in", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("points_out", sa.BigInteger(), nullable=False),
        sa.Column("remainder", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("value", sa.Numeric(precision=28, scale=6), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "points_in > 0 AND fee >= 0 AND points_out > 0", name=op.f("ck_exchange_quote_figures")
        ),
        sa.ForeignKeyConstraint(
            ["from_membership_id"],
            ["membership.id"],
            name=op.f("fk_exchange_quote_from_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_exchange_quote_member_id_member")
        ),
        sa.ForeignKeyConstraint(
            ["to_membership_id"],
            ["membership.id"],
            name=op.f("fk_exchange_quote_to_membership_id_membership"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_quote")),
    )
    op.create_table(
        "exchange",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("to_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("rate_id", sa.BigInteger(), nullable=False),
        sa.Column("quote_id", sa.BigInteger(), nullable=True),
        sa.Column("points_in", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("points_out", sa.BigInteger(), nullable=False),
        sa.Column("remainder", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "points_in > 0 AND fee >= 0 AND points_out > 0", name=op.f("ck_exchange_figures")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange")),
    )
    op.create_index(
        "ix_exchange_member", "exchange", ["member_id", sa.literal_column("id DESC")], unique=False
    )
    op.create_index(
        "uq_exchange_quote",
        "exchange",
        ["quote_id"],
        unique=True,
        postgresql_where=sa.text("quote_id IS NOT NULL"),
    )
    op.execute("INSERT INTO settlement_calendar (id) VALUES (1)")
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0007_exchange_down.sql").read_text()
    )
    for table in (
        "exchange", "exchange_quote", "settlement_obligation", "settlement_line",
        "partner_acceptance", "exchange_rate", "exchange_opt_out", "settlement_statement",
        "settlement_period", "settlement_calendar",
    ):  # fmt: skip
        op.drop_table(table)
    op.execute("DELETE FROM account WHERE kind = 'fee' AND membership_id IS NULL")
    _replace_check("account", "kind", _ACCOUNTS_BEFORE)
    _replace_check("ledger_transaction", "kind", _KINDS_BEFORE)
