"""The transactional outbox: events written in the same transaction as their cause,
numbered per aggregate, fanned out to merchants' webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class OutboxEvent(Base):
    __tablename__ = "outbox_event"

    id: Mapped[int] = id_column()
    topic: Mapped[str] = mapped_column(Text)
    """e.g. `points.earned`, `points.spent`."""
    merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at_column()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the dispatcher fanned it out to the webhook endpoints (migration 0010)."""
    aggregate: Mapped[str | None] = mapped_column(Text)
    """`member:<id>`, `merchant:<id>` or `alliance`: set at fan-out (migration 0015)."""
    aggregate_seq: Mapped[int | None] = mapped_column(BigInteger)
    """1, 2, 3… per aggregate in fan-out order (commit order for one account's ledger
    events); null until the event is fanned out."""

    __table_args__ = (
        Index("ix_outbox_event_pending", "id", postgresql_where=text("delivered_at IS NULL")),
    )


class OutboxSequence(Base):
    """The last number given to each aggregate's events."""

    __tablename__ = "outbox_sequence"

    aggregate: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = id_column()
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text))
    """Topics delivered (`points.earned`, …); `*` for all."""
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """The HMAC key, sealed with the server's secret key."""
    status: Mapped[str] = mapped_column(Text, server_default="active")
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        Index("ix_webhook_endpoint_merchant", "merchant_id"),
    )


class WebhookDelivery(Base):
    """One event for one endpoint: pending until delivered or dead (after N failures)."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = id_column()
    endpoint_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_endpoint.id"))
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("outbox_event.id"))
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    ordering_key: Mapped[int] = mapped_column(BigInteger)
    """The member (0 for events without one): one member's events go out in order."""
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = created_at_column()
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """A dispatcher is delivering it until then; past it, another may (it died)."""
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_event"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        Index(
            "ix_webhook_delivery_queue",
            "endpoint_id",
            "ordering_key",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_webhook_delivery_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", text("id DESC")),
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, as the merchant may inspect it (append-only)."""

    __tablename__ = "webhook_attempt"

    id: Mapped[int] = id_column()
    delivery_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_delivery.id"))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index("ix_webhook_attempt_delivery", "delivery_id", "id"),)


class ExpiryNotice(Base):
    """A lot whose coming expiry was told (`points.expiring`): told once."""

    __tablename__ = "expiry_notice"

    lot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("lot.id"), primary_key=True)
    created_at: Mapped[datetime] = created_at_column()
