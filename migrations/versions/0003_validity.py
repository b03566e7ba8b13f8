"""point validity: reversal with clawback debt, earning caps, action earning, opening balances

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:40:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0003_validity.sql"

_KINDS_BEFORE = "kind IN ('award', 'earn', 'spend', 'expire')"
_KINDS = "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund')"
_ACCOUNTS_BEFORE = (
    "kind IN ('member', 'issued', 'redeemed', 'expired', 'exchanged_out',"
    " 'exchanged_in', 'adjustment', 'held')"
)
_ACCOUNTS = (
    "kind IN ('member', 'issued', 'redeemed', 'expired', 'exchanged_out',"
    " 'exchanged_in', 'adjustment', 'held', 'clawback')"
)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(name, table, condition)


# Redundant with the account's own key (the account implies the program); a check per
# row cost every movement and import (see bench/RESULTS.md, bulk import).
_REDUNDANT_KEYS = (
    ("posting", "fk_posting_program_id_program"),
    ("lot", "fk_lot_program_id_program"),
)


def upgrade() -> None:
    for table, key in _REDUNDANT_KEYS:
        op.drop_constraint(key, table, type_="foreignkey")
    _replace_check("ledger_transaction", "kind", _KINDS)
    op.add_column("ledger_transaction", sa.Column("reverses_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_ledger_transaction_reverses_id_ledger_transaction"),
        "ledger_transaction", "ledger_transaction", ["reverses_id"], ["id"],
    )  # fmt: skip
    op.create_index(
        "ix_ledger_transaction_reverses",
        "ledger_transaction",
        ["reverses_id"],
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
    )

    _replace_check("account", "kind", _ACCOUNTS)
    # Every movement updates its account row; room on each page lets those updates be
    # HOT (no new index entries), the balance columns being in no index.
    op.execute("ALTER TABLE account SET (fillfactor = 70)")
    op.add_column("account", sa.Column("debt", sa.BigInteger(), server_default="0", nullable=False))
    op.create_check_constraint("debt_not_negative", "account", "debt >= 0")
    # Every program gets the new system account that carries clawback debts.
    op.execute(
        "INSERT INTO account (program_id, kind) SELECT id, 'clawback' FROM program ORDER BY id"
    )

    op.add_column(
        "program", sa.Column("clawback_policy", sa.Text(), server_default="debt", nullable=False)
    )
    op.create_check_constraint(
        "clawback_policy", "program", "clawback_policy IN ('debt', 'write_off')"
    )
    op.add_column(
        "program",
        sa.Column(
            "earn_caps",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    _replace_check("earning_rule", "kind", "kind IN ('purchase', 'promotion', 'action')")
    op.add_column(
        "membership",
        sa.Column(
            "segments", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
    )

    op.create_table(
        "earn_counter",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "period IN ('day', 'month', 'year')", name=op.f("ck_earn_counter_period")
        ),
        sa.CheckConstraint("points >= 0", name=op.f("ck_earn_counter_points_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_earn_counter_account_id_account")
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "scope", "period", "period_start", name=op.f("pk_earn_counter")
        ),
    )
    op.create_table(
        "action_claim",
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_action_claim_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_action_claim_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint(
            "membership_id", "action", "period_key", name=op.f("pk_action_claim")
        ),
    )
    op.create_table(
        "referral",
        sa.Column("referee_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("referrer_membership_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "referee_membership_id <> referrer_membership_id", name=op.f("ck_referral_not_self")
        ),
        sa.ForeignKeyConstraint(
            ["referee_membership_id"],
            ["membership.id"],
            name=op.f("fk_referral_referee_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_membership_id"],
            ["membership.id"],
            name=op.f("fk_referral_referrer_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_referral_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("referee_membership_id", name=op.f("pk_referral")),
    )
    op.create_index("ix_referral_referrer", "referral", ["referrer_membership_id"])
    op.create_table(
        "purchase_refund",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("refund_id", sa.Text(), nullable=False),
        sa.Column("earn_transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("clawback", sa.BigInteger(), nullable=False),
        sa.Column("taken", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("written_off", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_purchase_refund_amount_positive")),
        sa.CheckConstraint(
            "taken >= 0 AND debt >= 0 AND written_off >= 0"
            " AND clawback = taken + debt + written_off",
            name=op.f("ck_purchase_refund_clawback_split"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchant.id"], name=op.f("fk_purchase_refund_merchant_id_merchant")
        ),
        sa.ForeignKeyConstraint(
            ["earn_transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_purchase_refund_earn_transaction_id_ledger_transaction"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_purchase_refund_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_refund")),
        sa.UniqueConstraint("merchant_id", "refund_id", name="uq_purchase_refund_refund_id"),
    )
    op.create_index("ix_purchase_refund_earn", "purchase_refund", ["earn_transaction_id"])
    # Claims and referrals are facts the once-only rules rest on.
    for table in ("action_claim", "referral", "purchase_refund"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
        )
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0003_validity_down.sql").read_text()
    )
    op.drop_index("ix_purchase_refund_earn", table_name="purchase_refund")
    op.drop_table("purchase_refund")
    op.drop_index("ix_referral_referrer", table_name="referral")
    op.drop_table("referral")
    op.drop_table("action_claim")
    op.drop_table("earn_counter")
    _replace_check("earning_rule", "kind", "kind IN ('purchase', 'promotion')")
    op.drop_column("membership", "segments")
    op.drop_constraint(op.f("ck_program_clawback_policy"), "program", type_="check")
    op.drop_column("program", "earn_caps")
    op.drop_column("program", "clawback_policy")
    op.execute("DELETE FROM account WHERE kind = 'clawback' AND membership_id IS NULL")
    op.drop_constraint(op.f("ck_account_debt_not_negative"), "account", type_="check")
    op.drop_column("account", "debt")
    _replace_check("account", "kind", _ACCOUNTS_BEFORE)
    op.execute("ALTER TABLE account RESET (fillfactor)")
    op.drop_index("ix_ledger_transaction_reverses", table_name="ledger_transaction")
    op.drop_constraint(
        "fk_ledger_transaction_reverses_id_ledger_transaction", "ledger_transaction",
        type_="foreignkey",
    )  # fmt: skip
    op.drop_column("ledger_transaction", "reverses_id")
    _replace_check("ledger_transaction", "kind", _KINDS_BEFORE)
    for table, key in _REDUNDANT_KEYS:
        op.create_foreign_key(key, table, "program", ["program_id"], ["id"])
