"""Settlement obligations, periods, statements and their lines.

An obligation is written by the ledger function of the cross-merchant movement, in
its transaction, and never changes. A settlement run does not mark obligations: a
period records where it stopped, (ends_at, watermark), and its obligations are
exactly those with `occurred_at < ends_at AND id <= watermark` that no earlier period
took. So a run writes a handful of statement rows, not a row per obligation, and an
obligation committed after its period closed (late) falls into the next period.
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
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class ObligationKind(enum.StrEnum):
    EXCHANGE = "exchange"
    """The source merchant owes the target merchant the value of the points created."""
    EXCHANGE_FEE = "exchange_fee"
    """The source merchant owes the alliance the value of the fee points."""
    PARTNER_REDEMPTION = "partner_redemption"
    """The program's merchant owes the merchant where its points were spent."""


class SettlementObligation(Base):
    __tablename__ = "settlement_obligation"

    id: Mapped[int] = id_column()
    transaction_id: Mapped[int] = mapped_column(BigInteger)
    """Unindexed and unchecked on the hot path: reports join by it in bulk, and verify
    matches every obligation to its ledger transaction."""
    kind: Mapped[str] = mapped_column(Text)
    debtor_merchant_id: Mapped[int] = mapped_column(BigInteger)
    creditor_merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    """None: the alliance itself (fees).

    No foreign keys to merchant: each would take a share lock on a merchant row in every
    cross-merchant movement (a hot row); verify checks the parties exist."""
    program_id: Mapped[int] = mapped_column(BigInteger)
    """The program whose points are valued."""
    member_id: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)
    point_value: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    amount: Mapped[Decimal] = mapped_column(Numeric(28, 6))
    """points × point_value, exact; statements round at the line."""
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("kind IN ('exchange', 'exchange_fee', 'partner_redemption')", name="kind"),
        CheckConstraint("points > 0 AND amount = points * point_value", name="amount"),
        CheckConstraint(
            "(kind = 'exchange_fee') = (creditor_merchant_id IS NULL)"
            " AND debtor_merchant_id IS DISTINCT FROM creditor_merchant_id",
            name="parties",
        ),
        Index("ix_settlement_obligation_occurred", "occurred_at", "id"),
    )


class Cadence(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    """Monday to Sunday."""
    MONTHLY = "monthly"


class SettlementCalendar(Base):
    """The alliance's settlement cadence (one row)."""

    __tablename__ = "settlement_calendar"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    cadence: Mapped[str] = mapped_column(Text, server_default=Cadence.DAILY.value)
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("cadence IN ('daily', 'weekly', 'monthly')", name="cadence"),
    )


class PeriodStatus(enum.StrEnum):
    RUNNING = "running"
    """Its watermark is fixed; statements are being written (a crash leaves it here)."""
    CLOSED = "closed"


class SettlementPeriod(Base):
    __tablename__ = "settlement_period"

    id: Mapped[int] = id_column()
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), unique=True)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cadence: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=PeriodStatus.RUNNING.value)
    watermark: Mapped[int] = mapped_column(BigInteger)
    """Obligations with ids up to here were committed (or rolled back) when it closed."""
    previous_ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    previous_watermark: Mapped[int] = mapped_column(BigInteger)
    obligations: Mapped[int | None] = mapped_column(BigInteger)
    run_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window"),
        CheckConstraint("status IN ('running', 'closed')", name="status"),
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name="closed_shape"),
        CheckConstraint("watermark >= previous_watermark", name="watermark_monotone"),
    )


class StatementStatus(enum.StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"
    PAID = "paid"


class SettlementStatement(Base):
    """One party's statement for one period: a merchant's, or the alliance's (no merchant)."""

    __tablename__ = "settlement_statement"

    id: Mapped[int] = id_column()
    period_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("settlement_period.id"))
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    status: Mapped[str] = mapped_column(Text, server_default=StatementStatus.DRAFT.value)
    receivable: Mapped[Decimal] = mapped_column(Numeric(20, 2))
    payable: Mapped[Decimal] = mapped_column(Numeric(20, 2))
    net: Mapped[Decimal] = mapped_column(Numeric(20, 2))
    """receivable − payable: what the clearing house pays the party (negative: is paid)."""
    rounding: Mapped[Decimal] = mapped_column(Numeric(28, 6))
    """The exact net less `net`: what rounding the lines to the cent moved."""
    dispute_reason: Mapped[str | None] = mapped_column(Text)
    payment_reference: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "period_id",
            "merchant_id",
            name="uq_settlement_statement_party",
            postgresql_nulls_not_distinct=True,
        ),
        CheckConstraint(
            "status IN ('draft', 'issued', 'confirmed', 'disputed', 'paid')", name="status"
        ),
        CheckConstraint("net = receivable - payable", name="net"),
        CheckConstraint("(status = 'paid') = (payment_reference IS NOT NULL)", name="paid_shape"),
        Index("ix_settlement_statement_merchant", "merchant_id", text("id DESC")),
    )


class LineKind(enum.StrEnum):
    RECEIVABLE = "receivable"
    """Gross owed to the party by one counterparty, for one kind of obligation."""
    PAYABLE = "payable"
    """Gross the party owes one counterparty (the alliance, for fees)."""
    BILATERAL_NET = "bilateral_net"
    """Receivables less payables with one counterparty."""
    ROUNDING = "rounding"
    """The exact net less the sum of the rounded gross lines."""
    MULTILATERAL_NET = "multilateral_net"
    """What the alliance, as central counterparty, pays the party (negative: receives)."""


class SettlementLine(Base):
    __tablename__ = "settlement_line"

    id: Mapped[int] = id_column()
    statement_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("settlement_statement.id"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    counterparty_merchant_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("merchant.id")
    )
    """None: the alliance (or no single counterparty, on rounding and multilateral lines)."""
    obligation_kind: Mapped[str | None] = mapped_column(Text)
    debtor_merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    creditor_merchant_id: Mapped[int | None] = mapped_column(BigInteger)
    """On gross lines: the obligations the line sums (with the period and the kind)."""
    obligations: Mapped[int] = mapped_column(BigInteger, server_default="0")
    points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    exact_amount: Mapped[Decimal] = mapped_column(Numeric(28, 6))
    amount: Mapped[Decimal] = mapped_column(Numeric(20, 2))

    __table_args__ = (
        CheckConstraint(
            "kind IN ('receivable', 'payable', 'bilateral_net', 'rounding', 'multilateral_net')",
            name="kind",
        ),
        UniqueConstraint("statement_id", "position", name="uq_settlement_line_position"),
    )
