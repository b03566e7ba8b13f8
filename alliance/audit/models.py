"""Append-only audit trail of privileged actions (a trigger rejects UPDATE and DELETE).

Records form one hash chain per UTC day, computed by a BEFORE INSERT trigger
(migrations/sql/0010_audit.sql): `hash = sha256(previous_hash || content)`, numbered by
`chain_seq` under the lock of the day's `audit_chain_head` row. `alliance verify`
recomputes the chains (alliance/audit/verify.py).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Index, LargeBinary, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class AuditRecord(Base):
    __tablename__ = "audit_record"

    id: Mapped[int] = id_column()
    actor: Mapped[str] = mapped_column(Text)
    """The acting subject, e.g. `client:ops-console` or `member:42`."""
    client_id: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(Text)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    """The merchant the act concerns (by default the actor's binding): who may read it."""
    created_at: Mapped[datetime] = created_at_column()
    """Set by the chain trigger to the transaction's time."""
    chain_day: Mapped[date] = mapped_column(Date)
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    """1, 2, 3… within the day: a gap is a deleted record."""
    previous_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    content_digest: Mapped[bytes] = mapped_column(LargeBinary)
    """sha256 of [before, after] at insert: what the chain covers, so erasure can redact the
    documents (setting `redacted_at`) without breaking it."""
    redacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_audit_record_target", "target", "id"),
        Index("uq_audit_record_chain", "chain_day", "chain_seq", unique=True),
        Index("ix_audit_record_actor", "actor", "id"),
        Index("ix_audit_record_action", "action", "id"),
        Index(
            "ix_audit_record_merchant",
            "merchant_id",
            "id",
            postgresql_where=text("merchant_id IS NOT NULL"),
        ),
        Index("ix_audit_record_created_at", "created_at"),
    )


class AuditChainHead(Base):
    """The last record of each day's chain: its lock serialises the day's chain, and
    a chain cut short at its end no longer matches it."""

    __tablename__ = "audit_chain_head"

    chain_day: Mapped[date] = mapped_column(Date, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
