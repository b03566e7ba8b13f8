"""Earning rules, versioned and append-only.

A rule is identified by its `code` within a program; each change is a new version
with the time it takes effect (`valid_from`). The version in force at time t is the
latest one that took effect by t, and a rule stops applying when that version is
disabled or its own `valid_until` has passed. Nothing is ever updated, so an earn's
breakdown always names rule versions that still read as they did.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class RuleKind(enum.StrEnum):
    PURCHASE = "purchase"
    """Points per currency unit spent."""
    PROMOTION = "promotion"
    """A multiplier and/or a fixed bonus on purchases, usually for a time window."""
    ACTION = "action"
    """Points for something a member did: sign-up, check-in, referral…"""


class EarningRule(Base):
    __tablename__ = "earning_rule"

    id: Mapped[int] = id_column()
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    code: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    """Kind-specific terms and conditions, as validated by alliance.rules.service."""
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(Text, server_default="active")
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("program_id", "code", "version", name="uq_earning_rule_version"),
        CheckConstraint("kind IN ('purchase', 'promotion', 'action')", name="kind"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
        CheckConstraint("version > 0", name="version_positive"),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="window"),
        Index("ix_earning_rule_in_force", "program_id", "code", "valid_from"),
    )
