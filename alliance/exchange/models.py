"""Exchange rates between programs, quotes, exchanges, and partner acceptance.

A rate turns points of one program into points of another: the fee (a percentage,
rounded up, plus fixed points) is taken first, in source points; the rest is
multiplied by the exact fraction numerator/denominator and floored for the member.
The fraction of a point left over is the exchange's visible `remainder`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
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
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class ExchangeRate(Base):
    """One version of the rate of a pair of programs. Append-only: a change is a new version.

    At any moment the pair's rate is its highest version whose window contains the
    moment; a `withdrawn` version closes the pair from its `valid_from`."""

    __tablename__ = "exchange_rate"

    id: Mapped[int] = id_column()
    from_program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    to_program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    version: Mapped[int] = mapped_column(Integer)
    numerator: Mapped[int] = mapped_column(BigInteger)
    denominator: Mapped[int] = mapped_column(BigInteger)
    """Target points per source point, as an exact fraction in lowest terms."""
    fee_percent: Mapped[Decimal] = mapped_column(Numeric(7, 4), server_default="0")
    fee_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    min_points: Mapped[int] = mapped_column(BigInteger, server_default="1")
    max_points: Mapped[int | None] = mapped_column(BigInteger)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    published_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "from_program_id", "to_program_id", "version", name="uq_exchange_rate_version"
        ),
        CheckConstraint("from_program_id <> to_program_id", name="distinct_programs"),
        CheckConstraint("numerator > 0 AND denominator > 0", name="rate_positive"),
        CheckConstraint("fee_percent >= 0 AND fee_percent < 100 AND fee_points >= 0", name="fee"),
        CheckConstraint(
            "min_points >= 1 AND (max_points IS NULL OR max_points >= min_points)", name="limits"
        ),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="window"),
    )


class ExchangeOptOut(Base):
    """A merchant closed a pair involving one of its programs: no exchange runs on it."""

    __tablename__ = "exchange_opt_out"

    merchant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchant.id"), primary_key=True
    )
    from_program_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("program.id"), primary_key=True
    )
    to_program_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("program.id"), primary_key=True
    )
    created_at: Mapped[datetime] = created_at_column()


class ExchangeQuote(Base):
    """Rate and fee locked for a member for a short time; used by at most one exchange."""

    __tablename__ = "exchange_quote"

    id: Mapped[int] = id_column()
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"))
    from_membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    to_membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    rate_id: Mapped[int] = mapped_column(BigInteger)
    """No foreign key: every quote of a pair would share-lock the rate's row (verify checks)."""
    points_in: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    points_out: Mapped[int] = mapped_column(BigInteger)
    remainder: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    """The fraction of a target point not given (floor for the member), rounded down."""
    value: Mapped[Decimal] = mapped_column(Numeric(28, 6))
    """points_out × the target program's point value, in the settlement currency."""
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("points_in > 0 AND fee >= 0 AND points_out > 0", name="figures"),
    )


class Exchange(Base):
    """What an exchange moved; its ledger transaction holds the postings.

    Keyed by that transaction's id, with no foreign keys to it, the member, memberships
    or rate: an exchange writes enough rows already, and each key check is a lookup and a
    share lock (verify checks the references instead)."""

    __tablename__ = "exchange"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """The ledger transaction's id (no key check on the hot path; verify matches them)."""
    member_id: Mapped[int] = mapped_column(BigInteger)
    from_membership_id: Mapped[int] = mapped_column(BigInteger)
    to_membership_id: Mapped[int] = mapped_column(BigInteger)
    rate_id: Mapped[int] = mapped_column(BigInteger)
    quote_id: Mapped[int | None] = mapped_column(BigInteger)
    points_in: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    points_out: Mapped[int] = mapped_column(BigInteger)
    remainder: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("points_in > 0 AND fee >= 0 AND points_out > 0", name="figures"),
        Index("ix_exchange_member", "member_id", text("id DESC")),
        # A quote is used once; direct exchanges (no quote) write no index entry.
        Index(
            "uq_exchange_quote",
            "quote_id",
            unique=True,
            postgresql_where=text("quote_id IS NOT NULL"),
        ),
    )


class PartnerAcceptance(Base):
    """Whether merchant `merchant_id` takes points of program `program_id` at its counters."""

    __tablename__ = "partner_acceptance"

    merchant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchant.id"), primary_key=True
    )
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"), primary_key=True)
    min_points: Mapped[int] = mapped_column(BigInteger, server_default="1")
    max_points: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(
            "min_points >= 1 AND (max_points IS NULL OR max_points >= min_points)", name="limits"
        ),
    )
