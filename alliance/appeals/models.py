"""An appeal on one ledger transaction of a member, and its message thread."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class AppealReason(enum.StrEnum):
    MISSING_POINTS = "missing_points"
    WRONG_AMOUNT = "wrong_amount"
    UNAUTHORIZED = "unauthorized"
    """A spend or debit the member says they did not make."""
    EXPIRED_EARLY = "expired_early"
    OTHER = "other"


class AppealStatus(enum.StrEnum):
    OPEN = "open"
    IN_REVIEW = "in_review"
    """Merchant staff answered, or proposed an adjustment."""
    RESOLVED = "resolved"
    """An adjustment was posted for it."""
    REJECTED = "rejected"
    """Refused, with the reason in `resolution`."""


class Appeal(Base):
    __tablename__ = "appeal"

    id: Mapped[int] = id_column()
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("ledger_transaction.id"))
    entry_id: Mapped[int] = mapped_column(BigInteger)
    """The member's posting the appeal is about (their history entry)."""
    reason: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=AppealStatus.OPEN.value)
    respond_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """SLA: merchant staff answer by then."""
    resolve_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """SLA: resolved or rejected by then."""
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(Text)
    """Why it was rejected, or the note of the adjustment that resolved it."""
    adjustment_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("adjustment_request.id"), unique=True
    )
    """The latest adjustment proposed for it (maker-checker)."""
    updated_at: Mapped[datetime] = created_at_column()
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(
            "reason IN ('missing_points', 'wrong_amount', 'unauthorized', 'expired_early',"
            " 'other')",
            name="reason",
        ),
        CheckConstraint("status IN ('open', 'in_review', 'resolved', 'rejected')", name="status"),
        CheckConstraint(
            "(status IN ('resolved', 'rejected')) = (closed_at IS NOT NULL)", name="closed"
        ),
        # One live appeal per transaction; a closed one may be followed by another.
        Index(
            "uq_appeal_live_transaction",
            "transaction_id",
            unique=True,
            postgresql_where=text("status IN ('open', 'in_review')"),
        ),
        Index("ix_appeal_merchant", "merchant_id", text("id DESC")),
        Index("ix_appeal_member", "member_id", text("id DESC")),
    )


class AppealMessage(Base):
    """The thread: append-only (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "appeal_message"

    id: Mapped[int] = id_column()
    appeal_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("appeal.id"))
    author_role: Mapped[str] = mapped_column(Text)
    """member or merchant."""
    author: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("author_role IN ('member', 'merchant')", name="author_role"),
        Index("ix_appeal_message_appeal", "appeal_id", "id"),
    )
