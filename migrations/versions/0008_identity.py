"""identity federation: identifiers, verifications, consents, merges, privacy policy

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 19:40:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0008_identity.sql"

_KINDS_BEFORE = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption')"
)
_KINDS = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption', 'merge')"
)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(name, table, condition)


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    _replace_check("ledger_transaction", "kind", _KINDS)
    op.add_column("member", sa.Column("merged_into_id", sa.BigInteger(), nullable=True))
    op.add_column("member", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_member_merged_into_id_member"), "member", "member", ["merged_into_id"], ["id"]
    )
    op.create_table(
        "member_identifier",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        _created_at(),
        sa.CheckConstraint("kind IN ('phone', 'email')", name=op.f("ck_member_identifier_kind")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_member_identifier_member_id_member")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_identifier")),
        sa.UniqueConstraint("digest", name=op.f("uq_member_identifier_digest")),
    )
    op.create_index(op.f("ix_member_identifier_member_id"), "member_identifier", ["member_id"])
    op.create_table(
        "verification",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("actor_member_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("code_salt", sa.LargeBinary(), nullable=False),
        sa.Column("code_digest", sa.LargeBinary(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.CheckConstraint("kind IN ('phone', 'email')", name=op.f("ck_verification_kind")),
        sa.CheckConstraint(
            "attempts >= 0 AND attempts <= max_attempts", name=op.f("ck_verification_attempts")
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_verification_membership_id_membership"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verification")),
    )
    op.create_index("ix_verification_digest", "verification", ["digest", "created_at"])
    op.create_index("ix_verification_client", "verification", ["client_id", "created_at"])
    op.create_index("ix_verification_membership", "verification", ["membership_id"])
    op.create_table(
        "consent",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "purpose IN ('partner_balances', 'share_tier', 'marketing')",
            name=op.f("ck_consent_purpose"),
        ),
        sa.CheckConstraint(
            "withdrawn_at IS NULL OR withdrawn_at >= granted_at", name=op.f("ck_consent_order")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["member.id"], name=op.f("fk_consent_member_id_member")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchant.id"], name=op.f("fk_consent_merchant_id_merchant")
        ),
        sa.PrimaryKeyConstraint("member_id", "merchant_id", "purpose", name=op.f("pk_consent")),
    )
    op.create_table(
        "member_merge",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("survivor_id", sa.BigInteger(), nullable=False),
        sa.Column("absorbed_id", sa.BigInteger(), nullable=False),
        sa.Column("initiated_by", sa.Text(), nullable=False),
        sa.Column("idempotency_scope", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("memberships_moved", sa.Integer(), nullable=False),
        sa.Column("accounts_folded", sa.Integer(), nullable=False),
        sa.Column("points_moved", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "survivor_id <> absorbed_id", name=op.f("ck_member_merge_distinct_members")
        ),
        sa.CheckConstraint(
            "initiated_by IN ('operator', 'verification')",
            name=op.f("ck_member_merge_initiated_by"),
        ),
        sa.ForeignKeyConstraint(
            ["survivor_id"], ["member.id"], name=op.f("fk_member_merge_survivor_id_member")
        ),
        sa.ForeignKeyConstraint(
            ["absorbed_id"], ["member.id"], name=op.f("fk_member_merge_absorbed_id_member")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_merge")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_member_merge_idempotency"
        ),
    )
    op.create_index("ix_member_merge_absorbed", "member_merge", ["absorbed_id"])
    op.create_table(
        "membership_unlink",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("from_member_id", sa.BigInteger(), nullable=False),
        sa.Column("to_member_id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_scope", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_membership_unlink_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["from_member_id"],
            ["member.id"],
            name=op.f("fk_membership_unlink_from_member_id_member"),
        ),
        sa.ForeignKeyConstraint(
            ["to_member_id"], ["member.id"], name=op.f("fk_membership_unlink_to_member_id_member")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_unlink")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_membership_unlink_idempotency"
        ),
    )
    op.create_index("ix_membership_unlink_membership", "membership_unlink", ["membership_id"])
    op.create_table(
        "privacy_policy",
        sa.Column("id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("code_ttl_seconds", sa.Integer(), server_default="600", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="5", nullable=False),
        sa.Column("per_identifier_per_hour", sa.Integer(), server_default="5", nullable=False),
        sa.Column("per_client_per_hour", sa.Integer(), server_default="200", nullable=False),
        sa.Column("verification_retention_days", sa.Integer(), server_default="30", nullable=False),
        sa.Column(
            "erase_requires_settlement",
            sa.Boolean(),
            server_default=sa.text("true"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_privacy_policy_single_row")),
        sa.CheckConstraint(
            "code_ttl_seconds BETWEEN 60 AND 3600 AND max_attempts BETWEEN 1 AND 10"
            " AND per_identifier_per_hour BETWEEN 1 AND 100"
            " AND per_client_per_hour BETWEEN 1 AND 100000"
            " AND verification_retention_days BETWEEN 1 AND 3650",
            name=op.f("ck_privacy_policy_ranges"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_policy")),
    )
    op.get_bind().connection.driver_connection.execute(SQL.read_text())


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0008_identity_down.sql").read_text()
    )
    op.drop_table("privacy_policy")
    op.drop_index("ix_membership_unlink_membership", table_name="membership_unlink")
    op.drop_table("membership_unlink")
    op.drop_index("ix_member_merge_absorbed", table_name="member_merge")
    op.drop_table("member_merge")
    op.drop_table("consent")
    op.drop_index("ix_verification_membership", table_name="verification")
    op.drop_index("ix_verification_client", table_name="verification")
    op.drop_index("ix_verification_digest", table_name="verification")
    op.drop_table("verification")
    op.drop_index(op.f("ix_member_identifier_member_id"), table_name="member_identifier")
    op.drop_table("member_identifier")
    op.drop_constraint(op.f("fk_member_merged_into_id_member"), "member", type_="foreignkey")
    op.drop_column("member", "erased_at")
    op.drop_column("member", "merged_into_id")
    _replace_check("ledger_transaction", "kind", _KINDS_BEFORE)
