"""The transactional outbox: events written in the same transaction as their cause."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Text
from sqlalchemy.dialects.postgresql import JSONB
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
