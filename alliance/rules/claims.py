"""What the once-only and per-period action rules and the earning caps rest on.

Each table is written by the ledger functions of migrations/sql/0003_validity.sql in
the same transaction as the earn, so the database, not Python, enforces "once".
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column


class EarnCounter(Base):
    """Points a member account earned by rules in one cap period (alliance time zone).

    `scope` is `program` (all rule-based earning) or `rule:<code>` (one rule's lines).
    Counted only while a cap applies, so a cap introduced mid-period counts from then."""

    __tablename__ = "earn_counter"

    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("account.id"), primary_key=True)
    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    period: Mapped[str] = mapped_column(Text, primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("period IN ('day', 'month', 'year')", name="period"),
        CheckConstraint("points >= 0", name="points_not_negative"),
    )


class ActionClaim(Base):
    """A member was rewarded for an action in a period (`once`, a day, a month …)."""

    __tablename__ = "action_claim"

    membership_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("membership.id"), primary_key=True
    )
    action: Mapped[str] = mapped_column(Text, primary_key=True)
    period_key: Mapped[str] = mapped_column(Text, primary_key=True)
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    """None when caps left nothing to post: the claim (or referral) still counts."""
    created_at: Mapped[datetime] = created_at_column()


class Referral(Base):
    """A member was referred once, ever, by one other membership of the same program."""

    __tablename__ = "referral"

    referee_membership_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("membership.id"), primary_key=True
    )
    referrer_membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    """None when caps left nothing to post: the claim (or referral) still counts."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("referee_membership_id <> referrer_membership_id", name="not_self"),
        Index("ix_referral_referrer", "referrer_membership_id"),
    )
