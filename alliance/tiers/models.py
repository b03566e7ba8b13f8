"""Member tiers: a versioned tier ladder per program, each membership's tier, its history,
and the qualifying activity tiers are reached by.

Ladders are append-only: a change is a new version (`tier_ladder`) with its own `tier`
rows, so a tier change recorded under an old version still reads as it did. A
membership's tier row names the tier it was given, of the version current then; what it
holds now is that tier carried onto the current version by code (see
migrations/sql/0004_tiers.sql, `tier_held`).
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class TierBasis(enum.StrEnum):
    """What qualifies a membership for a tier, summed over the rolling window."""

    SPEND = "spend"
    """Purchase amounts in the program's currency (refunds subtract)."""
    POINTS = "points"
    """Points earned by the earning rules (reversals subtract)."""


class TierChangeReason(enum.StrEnum):
    QUALIFIED = "qualified"
    """The rolling total reached a higher tier (on the event that reached it)."""
    DOWNGRADED = "downgraded"
    """The total stayed below the tier's threshold through the grace period."""
    LADDER_CHANGED = "ladder_changed"
    """A new ladder version dropped the tier's code or lowered the bar to a higher tier."""


class TierLadder(Base):
    """One version of a program's tier ladder and its qualification policy."""

    __tablename__ = "tier_ladder"

    id: Mapped[int] = id_column()
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    version: Mapped[int] = mapped_column(Integer)
    basis: Mapped[str] = mapped_column(Text)
    window_days: Mapped[int] = mapped_column(Integer)
    """Days of activity that count, ending now (a rolling window)."""
    grace_days: Mapped[int] = mapped_column(Integer)
    """Days a membership keeps a tier it no longer qualifies for before it moves down."""
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("program_id", "version", name="uq_tier_ladder_version"),
        CheckConstraint("basis IN ('spend', 'points')", name="basis"),
        CheckConstraint("version > 0", name="version_positive"),
        CheckConstraint(
            "window_days BETWEEN 1 AND 3650 AND grace_days BETWEEN 0 AND 365", name="durations"
        ),
    )


class Tier(Base):
    """A rung of one ladder version. Immutable: a changed tier is a row of a new version."""

    __tablename__ = "tier"

    id: Mapped[int] = id_column()
    ladder_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tier_ladder.id"))
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    code: Mapped[str] = mapped_column(Text)
    """The tier's identity across ladder versions."""
    name: Mapped[str] = mapped_column(Text)
    rank: Mapped[int] = mapped_column(Integer)
    """0 is the entry tier every membership starts in."""
    threshold: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    """Qualifying total (in the ladder's basis) that reaches this tier."""
    multiplier: Mapped[Decimal] = mapped_column(Numeric(6, 2))
    """Earning multiplier for members of this tier."""
    benefits: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))

    __table_args__ = (
        UniqueConstraint("ladder_id", "rank", name="uq_tier_rank"),
        UniqueConstraint("ladder_id", "code", name="uq_tier_code"),
        CheckConstraint("rank BETWEEN 0 AND 9", name="rank"),
        CheckConstraint("threshold >= 0 AND (rank = 0) = (threshold = 0)", name="threshold"),
        CheckConstraint("multiplier >= 1", name="multiplier"),
        CheckConstraint("jsonb_typeof(benefits) = 'array'", name="benefits_list"),
    )


class MembershipTier(Base):
    """A membership's tier state; the row appears with its first qualifying activity."""

    __tablename__ = "membership_tier"

    membership_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("membership.id"), primary_key=True
    )
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tier.id"))
    """The tier given, of the ladder version current then; None: the entry tier."""
    downgrade_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the grace period of a pending downgrade ends; None: none pending."""
    updated_at: Mapped[datetime] = created_at_column()


class TierChange(Base):
    """One change of a membership's tier. Append-only."""

    __tablename__ = "tier_change"

    id: Mapped[int] = id_column()
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    from_tier_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tier.id"))
    to_tier_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tier.id"))
    reason: Mapped[str] = mapped_column(Text)
    qualifying_total: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    """The rolling total when the change was made."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("reason IN ('qualified', 'downgraded', 'ladder_changed')", name="reason"),
        Index("ix_tier_change_membership", "membership_id", "id"),
    )


class QualifyingActivity(Base):
    """What one ledger transaction contributes to a membership's rolling total. Append-only:
    a refund is a negative activity of its own transaction."""

    __tablename__ = "qualifying_activity"

    membership_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("membership.id"), primary_key=True
    )
    transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the purchase happened; a refund carries its purchase's time, so that the
    undoing leaves the window together with what it undoes."""
    spend: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        # The rolling-window sum reads only this index.
        Index(
            "ix_qualifying_activity_window",
            "membership_id",
            "occurred_at",
            postgresql_include=["spend", "points"],
        ),
    )
