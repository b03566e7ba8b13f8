"""rewards: catalog with versions, redemptions on reward holds, coupons, point gifts

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 19:40:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0009_rewards.sql"
SQL_DOWN = Path(__file__).resolve().parent.parent / "sql" / "0009_rewards_down.sql"

_KINDS_BEFORE = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption', 'merge')"
)
_KINDS = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption', 'merge', 'gift')"
)


def _created_at(name: str = "created_at") -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.drop_constraint(op.f("ck_ledger_transaction_kind"), "ledger_transaction", type_="check")
    op.create_check_constraint("kind", "ledger_transaction", _KINDS)
    op.create_table(
        "reward",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("stock_issued", sa.BigInteger(), nullable=True),
        _created_at(),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_reward_status")),
        sa.CheckConstraint("stock_issued >= 0", name=op.f("ck_reward_stock_issued")),
        sa.CheckConstraint(
            "(status = 'archived') = (archived_at IS NOT NULL)", name=op.f("ck_reward_archived")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_reward_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward")),
        sa.UniqueConstraint("program_id", "code", name="uq_reward_program_code"),
    )
    op.create_index("ix_reward_program", "reward", ["program_id", "id"])
    op.create_table(
        "reward_stock_slot",
        sa.Column("reward_id", sa.BigInteger(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=True),
        sa.Column("redeemed", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "stock >= 0 AND redeemed >= 0", name=op.f("ck_reward_stock_slot_counts")
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["reward.id"], name=op.f("fk_reward_stock_slot_reward_id_reward")
        ),
        sa.PrimaryKeyConstraint("reward_id", "slot", name=op.f("pk_reward_stock_slot")),
    )
    op.create_table(
        "reward_version",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reward_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("points_price", sa.BigInteger(), nullable=False),
        sa.Column("cash_price", sa.Numeric(20, 4), server_default="0", nullable=False),
        sa.Column("limit_total", sa.Integer(), nullable=True),
        sa.Column("limit_per_period", sa.Integer(), nullable=True),
        sa.Column("limit_period", sa.Text(), nullable=True),
        sa.Column("tier_codes", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("image_urls", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("reserve_minutes", sa.Integer(), server_default="30", nullable=False),
        sa.Column("complete_days", sa.Integer(), server_default="30", nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "kind IN ('goods', 'coupon', 'gift', 'discount', 'experience')",
            name=op.f("ck_reward_version_kind"),
        ),
        sa.CheckConstraint(
            "points_price > 0 AND cash_price >= 0", name=op.f("ck_reward_version_price")
        ),
        sa.CheckConstraint(
            "(limit_total IS NULL OR limit_total > 0)"
            " AND (limit_per_period IS NULL) = (limit_period IS NULL)"
            " AND (limit_per_period IS NULL OR limit_per_period > 0)"
            " AND (limit_period IS NULL OR limit_period IN ('day', 'week', 'month', 'year'))",
            name=op.f("ck_reward_version_limits"),
        ),
        sa.CheckConstraint(
            "valid_until IS NULL OR valid_until > valid_from",
            name=op.f("ck_reward_version_window"),
        ),
        sa.CheckConstraint(
            "reserve_minutes BETWEEN 1 AND 10080 AND complete_days BETWEEN 1 AND 365",
            name=op.f("ck_reward_version_deadlines"),
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["reward.id"], name=op.f("fk_reward_version_reward_id_reward")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_version")),
        sa.UniqueConstraint("reward_id", "version", name="uq_reward_version"),
    )
    op.create_table(
        "redemption",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reward_id", sa.BigInteger(), nullable=False),
        sa.Column("reward_version_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=False),
        sa.Column("stock_slot", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cash_price", sa.Numeric(20, 4), nullable=False),
        sa.Column("status", sa.Text(), server_default="reserved", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_scope", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("fulfilment", sa.Text(), nullable=True),
        sa.Column("carrier", sa.Text(), nullable=True),
        sa.Column("tracking_number", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        _created_at(),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('reserved', 'fulfilled', 'completed', 'cancelled', 'expired')",
            name=op.f("ck_redemption_status"),
        ),
        sa.CheckConstraint(
            "(status = 'completed') = (transaction_id IS NOT NULL)"
            " AND (status IN ('reserved', 'fulfilled')) = (closed_at IS NULL)"
            " AND (fulfilment IS NULL) = (fulfilled_at IS NULL)"
            " AND (status NOT IN ('fulfilled', 'completed') OR fulfilment IS NOT NULL)"
            " AND (fulfilment IS NULL OR fulfilment IN ('coupon', 'shipment'))",
            name=op.f("ck_redemption_state_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["reward_version_id"],
            ["reward_version.id"],
            name=op.f("fk_redemption_reward_version_id_reward_version"),
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_redemption_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_redemption_account_id_account")
        ),
        sa.ForeignKeyConstraint(["hold_id"], ["hold.id"], name=op.f("fk_redemption_hold_id_hold")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_redemption_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_redemption_hold_id")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_redemption_idempotency"
        ),
    )
    op.create_index(
        "ix_redemption_member_reward", "redemption", ["membership_id", "reward_id", "created_at"]
    )
    op.create_index(
        "ix_redemption_open",
        "redemption",
        ["expires_at", "id"],
        postgresql_where=sa.text("status IN ('reserved', 'fulfilled')"),
    )
    op.create_index("ix_redemption_reward", "redemption", ["reward_id"])
    op.create_table(
        "coupon",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("redemption_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="issued", nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("used_store", sa.Text(), nullable=True),
        _created_at(),
        sa.CheckConstraint("status IN ('issued', 'used', 'void')", name=op.f("ck_coupon_status")),
        sa.CheckConstraint(
            "(status = 'used') = (used_at IS NOT NULL AND used_merchant_id IS NOT NULL)",
            name=op.f("ck_coupon_used_shape"),
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"], ["redemption.id"], name=op.f("fk_coupon_redemption_id_redemption")
        ),
        sa.ForeignKeyConstraint(
            ["used_merchant_id"], ["merchant.id"], name=op.f("fk_coupon_used_merchant_id_merchant")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon")),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_code")),
        sa.UniqueConstraint("redemption_id", name=op.f("uq_coupon_redemption_id")),
    )
    op.create_table(
        "gift_policy",
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("max_points_per_gift", sa.BigInteger(), nullable=False),
        sa.Column("daily_limit_points", sa.BigInteger(), nullable=False),
        _created_at("updated_at"),
        sa.CheckConstraint(
            "max_points_per_gift > 0 AND daily_limit_points >= max_points_per_gift",
            name=op.f("ck_gift_policy_limits"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_gift_policy_program_id_program")
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_gift_policy")),
    )
    op.create_table(
        "gift",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("from_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("to_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("recipient_entry_id", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "points > 0 AND from_membership_id <> to_membership_id", name=op.f("ck_gift_shape")
        ),
        sa.ForeignKeyConstraint(
            ["from_membership_id"],
            ["membership.id"],
            name=op.f("fk_gift_from_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["to_membership_id"],
            ["membership.id"],
            name=op.f("fk_gift_to_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_gift_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gift")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_gift_transaction_id")),
    )
    op.create_index("ix_gift_sender_day", "gift", ["from_membership_id", "created_at"])
    # Functions and triggers: sent as one simple-protocol script, untouched by bind parsing.
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(SQL_DOWN.read_text())
    op.drop_index("ix_gift_sender_day", table_name="gift")
    op.drop_table("gift")
    op.drop_table("gift_policy")
    op.drop_table("coupon")
    op.drop_index("ix_redemption_reward", table_name="redemption")
    op.drop_index("ix_redemption_open", table_name="redemption")
    op.drop_index("ix_redemption_member_reward", table_name="redemption")
    op.drop_table("redemption")
    op.drop_table("reward_version")
    op.drop_table("reward_stock_slot")
    op.drop_index("ix_reward_program", table_name="reward")
    op.drop_table("reward")
    op.drop_constraint(op.f("ck_ledger_transaction_kind"), "ledger_transaction", type_="check")
    op.create_check_constraint("kind", "ledger_transaction", _KINDS_BEFORE)
