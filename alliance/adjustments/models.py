"""Adjustment requests: a credit or debit of a membership asked for by one staff identity
and, at or above the program's threshold, approved or rejected by another."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class AdjustmentDirection(enum.StrEnum):
    CREDIT = "credit"
    DEBIT = "debit"


class AdjustmentReason(enum.StrEnum):
    GOODWILL = "goodwill"
    CORRECTION = "correction"
    COMPENSATION = "compensation"
    APPEAL = "appeal"
    MIGRATION = "migration"
    FRAUD = "fraud"
    OTHER = "other"


class AdjustmentStatus(enum.StrEnum):
    PENDING = "pending"
    """Waiting for a second staff identity."""
    POSTED = "posted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Nobody decided before `expires_at`."""


class AdjustmentRequest(Base):
    __tablename__ = "adjustment_request"

    id: Mapped[int] = id_column()
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(Text)
    points: Mapped[int] = mapped_column(BigInteger)
    """Always positive; `direction` says which way."""
    reason_code: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=AdjustmentStatus.PENDING.value)
    requested_by: Mapped[str] = mapped_column(Text)
    """The maker: a staff identity (the OAuth client's subject, `client:<id>`)."""
    idempotency_scope: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    needs_approval: Mapped[bool] = mapped_column(server_default=text("false"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """A pending request not decided by then expires (the adjustments job)."""
    decided_by: Mapped[str | None] = mapped_column(Text)
    """The checker; never the maker (a CHECK says so too)."""
    decision_note: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id"), unique=True
    )
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_adjustment_request_idempotency"
        ),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("direction IN ('credit', 'debit')", name="direction"),
        CheckConstraint(
            "reason_code IN ('goodwill', 'correction', 'compensation', 'appeal', 'migration',"
            " 'fraud', 'other')",
            name="reason_code",
        ),
        CheckConstraint("status IN ('pending', 'posted', 'rejected', 'expired')", name="status"),
        CheckConstraint("decided_by IS NULL OR decided_by <> requested_by", name="four_eyes"),
        # That a posted request has its transaction (and one below the threshold was
        # posted at once) is checked by `alliance verify`: the row is written before its
        # transaction, in the same database transaction.
        CheckConstraint(
            "status <> 'pending' OR (needs_approval AND expires_at IS NOT NULL)",
            name="pending_needs_approval",
        ),
        Index("ix_adjustment_request_merchant", "merchant_id", text("id DESC")),
        Index(
            "ix_adjustment_request_pending_expiry",
            "expires_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_adjustment_request_membership", "membership_id"),
    )
