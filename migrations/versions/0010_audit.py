"""audit: hash chain per day, merchant scope; manual adjustments with maker-checker;
appeals; outbox sequence numbers and webhooks

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 20:10:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).resolve().parent.parent / "sql" / "0010_audit.sql"

_KINDS_BEFORE = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption', 'merge', 'gift')"
)
_KINDS = (
    "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
    " 'exchange', 'partner_redemption', 'merge', 'gift', 'adjustment')"
)

# Chains the records written before this migration, day by day in id order, as the
# trigger would have (the append-only trigger is paused for it).
_BACKFILL = """
DO $$
DECLARE
    r record;
    v_day date;
    v_seq bigint := 0;
    v_hash bytea;
    v_zero bytea := '\\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    FOR r IN SELECT id, (created_at AT TIME ZONE 'UTC')::date AS day
               FROM audit_record ORDER BY (created_at AT TIME ZONE 'UTC')::date, id LOOP
        IF v_day IS DISTINCT FROM r.day THEN
            v_day := r.day;
            v_seq := 0;
            v_hash := v_zero;
        END IF;
        v_seq := v_seq + 1;
        UPDATE audit_record SET chain_day = v_day, chain_seq = v_seq, previous_hash = v_hash,
               content_digest = audit_content_digest(before, after)
         WHERE id = r.id;
        UPDATE audit_record a SET hash = audit_record_hash(a) WHERE a.id = r.id
        RETURNING a.hash INTO v_hash;
        INSERT INTO audit_chain_head (chain_day, seq, hash) VALUES (v_day, v_seq, v_hash)
        ON CONFLICT (chain_day) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;
    END LOOP;
END $$;
"""


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    _replace_check("ledger_transaction", "kind", _KINDS)
    op.add_column("program", sa.Column("adjustment_approval_threshold", sa.BigInteger()))

    op.add_column("audit_record", sa.Column("merchant_id", sa.BigInteger()))
    op.add_column("audit_record", sa.Column("chain_day", sa.Date()))
    op.add_column("audit_record", sa.Column("chain_seq", sa.BigInteger()))
    op.add_column("audit_record", sa.Column("previous_hash", sa.LargeBinary()))
    op.add_column("audit_record", sa.Column("hash", sa.LargeBinary()))
    op.add_column("audit_record", sa.Column("content_digest", sa.LargeBinary()))
    op.add_column(
        "audit_record", sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "audit_chain_head",
        sa.Column("chain_day", sa.Date(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("chain_day", name=op.f("pk_audit_chain_head")),
    )
    # Records written before: their merchant is their actor's, when a merchant client's.
    op.execute("ALTER TABLE audit_record DISABLE TRIGGER audit_record_append_only")
    op.execute(
        "UPDATE audit_record a SET merchant_id = c.merchant_id FROM oauth_client c"
        " WHERE c.client_id = a.client_id AND c.merchant_id IS NOT NULL"
    )
    op.get_bind().connection.driver_connection.execute(SQL.read_text())
    op.execute(_BACKFILL)
    op.execute("ALTER TABLE audit_record ENABLE TRIGGER audit_record_append_only")
    for column in ("chain_day", "chain_seq", "previous_hash", "hash", "content_digest"):
        op.alter_column("audit_record", column, nullable=False)
    op.create_index(
        "uq_audit_record_chain", "audit_record", ["chain_day", "chain_seq"], unique=True
    )
    op.create_index("ix_audit_record_actor", "audit_record", ["actor", "id"])
    op.create_index("ix_audit_record_action", "audit_record", ["action", "id"])
    op.create_index(
        "ix_audit_record_merchant",
        "audit_record",
        ["merchant_id", "id"],
        postgresql_where=sa.text("merchant_id IS NOT NULL"),
    )
    op.create_index("ix_audit_record_created_at", "audit_record", ["created_at"])

    op.create_table(
        "adjustment_request",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reason_code", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("idempotency_scope", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("needs_approval", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transaction_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("points > 0", name=op.f("ck_adjustment_request_points_positive")),
        sa.CheckConstraint(
            "direction IN ('credit', 'debit')", name=op.f("ck_adjustment_request_direction")
        ),
        sa.CheckConstraint(
            "reason_code IN ('goodwill', 'correction', 'compensation', 'appeal', 'migration',"
            " 'fraud', 'other')",
            name=op.f("ck_adjustment_request_reason_code"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'posted', 'rejected', 'expired')",
            name=op.f("ck_adjustment_request_status"),
        ),
        sa.CheckConstraint(
            "decided_by IS NULL OR decided_by <> requested_by",
            name=op.f("ck_adjustment_request_four_eyes"),
        ),
        sa.CheckConstraint(
            "status <> 'pending' OR (needs_approval AND expires_at IS NOT NULL)",
            name=op.f("ck_adjustment_request_pending_needs_approval"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchant.id"],
            name=op.f("fk_adjustment_request_merchant_id_merchant"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_adjustment_request_program_id_program")
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_adjustment_request_membership_id_membership"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_adjustment_request_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustment_request")),
        sa.UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_adjustment_request_idempotency"
        ),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_adjustment_request_transaction_id")),
    )
    op.create_index(
        "ix_adjustment_request_merchant",
        "adjustment_request",
        ["merchant_id", sa.literal_column("id DESC")],
    )
    op.create_index(
        "ix_adjustment_request_pending_expiry",
        "adjustment_request",
        ["expires_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_adjustment_request_membership", "adjustment_request", ["membership_id"])

    op.create_table(
        "appeal",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("program_id", sa.BigInteger(), nullable=False),
        sa.Column("membership_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolve_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("adjustment_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "reason IN ('missing_points', 'wrong_amount', 'unauthorized', 'expired_early',"
            " 'other')",
            name=op.f("ck_appeal_reason"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'in_review', 'resolved', 'rejected')", name=op.f("ck_appeal_status")
        ),
        sa.CheckConstraint(
            "(status IN ('resolved', 'rejected')) = (closed_at IS NOT NULL)",
            name=op.f("ck_appeal_closed"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchant.id"], name=op.f("fk_appeal_merchant_id_merchant")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_appeal_program_id_program")
        ),
        sa.ForeignKeyConstraint(
            ["membership_id"], ["membership.id"], name=op.f("fk_appeal_membership_id_membership")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_appeal_transaction_id_ledger_transaction"),
        ),
        sa.ForeignKeyConstraint(
            ["adjustment_id"],
            ["adjustment_request.id"],
            name=op.f("fk_appeal_adjustment_id_adjustment_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appeal")),
        sa.UniqueConstraint("adjustment_id", name=op.f("uq_appeal_adjustment_id")),
    )
    op.create_index(
        "uq_appeal_live_transaction",
        "appeal",
        ["transaction_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('open', 'in_review')"),
    )
    op.create_index("ix_appeal_merchant", "appeal", ["merchant_id", sa.literal_column("id DESC")])
    op.create_index("ix_appeal_member", "appeal", ["member_id", sa.literal_column("id DESC")])
    op.create_table(
        "appeal_message",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("appeal_id", sa.BigInteger(), nullable=False),
        sa.Column("author_role", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "author_role IN ('member', 'merchant')", name=op.f("ck_appeal_message_author_role")
        ),
        sa.ForeignKeyConstraint(
            ["appeal_id"], ["appeal.id"], name=op.f("fk_appeal_message_appeal_id_appeal")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appeal_message")),
    )
    op.create_index("ix_appeal_message_appeal", "appeal_message", ["appeal_id", "id"])
    op.add_column("outbox_event", sa.Column("aggregate", sa.Text(), nullable=True))
    op.add_column("outbox_event", sa.Column("aggregate_seq", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_outbox_event_pending",
        "outbox_event",
        ["id"],
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "outbox_sequence",
        sa.Column("aggregate", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("aggregate", name=op.f("pk_outbox_sequence")),
    )
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('active', 'disabled')", name=op.f("ck_webhook_endpoint_status")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchant.id"], name=op.f("fk_webhook_endpoint_merchant_id_merchant")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
    )
    op.create_index("ix_webhook_endpoint_merchant", "webhook_endpoint", ["merchant_id"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("ordering_key", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name=op.f("ck_webhook_delivery_status")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox_event.id"],
            name=op.f("fk_webhook_delivery_event_id_outbox_event"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_event"),
    )
    op.create_index(
        "ix_webhook_delivery_queue",
        "webhook_delivery",
        ["endpoint_id", "ordering_key", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_delivery_due",
        "webhook_delivery",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_delivery_endpoint",
        "webhook_delivery",
        ["endpoint_id", sa.literal_column("id DESC")],
    )
    op.create_table(
        "webhook_attempt",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_delivery.id"],
            name=op.f("fk_webhook_attempt_delivery_id_webhook_delivery"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempt")),
    )
    op.create_index("ix_webhook_attempt_delivery", "webhook_attempt", ["delivery_id", "id"])
    op.create_table(
        "expiry_notice",
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_expiry_notice_lot_id_lot")),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_expiry_notice")),
    )
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0010_audit_webhooks.sql").read_text()
    )
    op.execute(
        "CREATE TRIGGER appeal_message_append_only BEFORE UPDATE OR DELETE ON appeal_message"
        " FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
    )


def downgrade() -> None:
    op.get_bind().connection.driver_connection.execute(
        SQL.with_name("0010_audit_down.sql").read_text()
    )
    op.drop_table("expiry_notice")
    op.drop_table("webhook_attempt")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_endpoint")
    op.drop_table("outbox_sequence")
    op.drop_index("ix_outbox_event_pending", table_name="outbox_event")
    op.drop_column("outbox_event", "aggregate_seq")
    op.drop_column("outbox_event", "aggregate")
    op.drop_table("appeal_message")
    op.drop_table("appeal")
    op.drop_table("adjustment_request")
    op.drop_index("ix_audit_record_created_at", table_name="audit_record")
    op.drop_index("ix_audit_record_merchant", table_name="audit_record")
    op.drop_index("ix_audit_record_action", table_name="audit_record")
    op.drop_index("ix_audit_record_actor", table_name="audit_record")
    op.drop_index("uq_audit_record_chain", table_name="audit_record")
    op.drop_table("audit_chain_head")
    for column in (
        "hash",
        "previous_hash",
        "chain_seq",
        "chain_day",
        "merchant_id",
        "content_digest",
        "redacted_at",
    ):
        op.drop_column("audit_record", column)
    op.drop_column("program", "adjustment_approval_threshold")
    _replace_check("ledger_transaction", "kind", _KINDS_BEFORE)
