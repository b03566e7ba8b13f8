"""Merchants and their points programs."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class ExpiryPolicy(enum.StrEnum):
    NEVER = "never"
    DAYS_AFTER_EARN = "days_after_earn"
    """Valid through the end of the Nth day after the earn (alliance time zone)."""
    END_OF_NTH_MONTH = "end_of_nth_month"
    """Valid through the end of the Nth month after the earn month (0: the earn month)."""
    ANNUAL_CLEARING = "annual_clearing"
    """积分清零: points earned in year Y are cleared at the end of day MMDD (the value) of Y+1."""


class Merchant(Base):
    __tablename__ = "merchant"

    id: Mapped[int] = id_column()
    code: Mapped[str] = mapped_column(Text, unique=True)
    """Short stable handle, e.g. `golden-wok`; lowercase letters, digits and dashes."""
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("status IN ('active', 'suspended')", name="status"),)


class Program(Base):
    __tablename__ = "program"

    id: Mapped[int] = id_column()
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant.id"), index=True)
    code: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    unit_name: Mapped[str] = mapped_column(Text)
    point_value: Mapped[Decimal] = mapped_column(Numeric(20, 6))
    """What one point is worth in the settlement currency: the liability per outstanding point."""
    currency: Mapped[str] = mapped_column(Text, server_default="CNY")
    expiry_policy: Mapped[str] = mapped_column(Text, server_default=ExpiryPolicy.NEVER.value)
    expiry_value: Mapped[int] = mapped_column(Integer, server_default="0")
    pending_days: Mapped[int] = mapped_column(Integer, server_default="0")
    """Days before earned points become spendable (the returns window)."""
    promotion_stacking: Mapped[str] = mapped_column(Text, server_default="best_of")
    """How promotions' multipliers combine: best_of, additive or multiplicative."""
    clawback_policy: Mapped[str] = mapped_column(Text, server_default="debt")
    """When a refunded purchase's points are already spent: `debt` (repaid first by future
    credits) or `write_off` (the merchant absorbs them on its adjustment account)."""
    earn_caps: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    """Per member caps on rule-based earning: [{"period": "day", "points": 500}, …]."""
    discount_max_share: Mapped[Decimal] = mapped_column(Numeric(4, 3), server_default="1")
    """The largest share of a bill that points may pay at the counter (0.5: half)."""
    discount_min_points: Mapped[int] = mapped_column(Integer, server_default="1")
    """The fewest points a counter discount may use."""
    adjustment_approval_threshold: Mapped[int | None] = mapped_column(BigInteger)
    """Manual adjustments of this many points or more wait for a second staff identity;
    None: every adjustment does (migration 0010)."""
    status: Mapped[str] = mapped_column(Text, server_default="active")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("merchant_id", "code", name="uq_program_merchant_code"),
        CheckConstraint("point_value > 0", name="point_value_positive"),
        CheckConstraint(
            "expiry_policy IN ('never', 'days_after_earn', 'end_of_nth_month', 'annual_clearing')",
            name="expiry_policy",
        ),
        CheckConstraint("expiry_value >= 0 AND pending_days >= 0", name="durations"),
        CheckConstraint(
            "promotion_stacking IN ('best_of', 'additive', 'multiplicative')",
            name="promotion_stacking",
        ),
        CheckConstraint("status IN ('active', 'closed')", name="status"),
        CheckConstraint("clawback_policy IN ('debt', 'write_off')", name="clawback_policy"),
        CheckConstraint(
            "discount_max_share > 0 AND discount_max_share <= 1 AND discount_min_points >= 1",
            name="discount_policy",
        ),
    )
