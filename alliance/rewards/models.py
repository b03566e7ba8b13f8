"""Reward catalog, redemptions, coupons and gifts.

A reward's terms (price, limits, audience, window) live in append-only versions: an
update writes a new version and every redemption names the version it was reserved
under. What changes with every redemption, the stock left and the redemptions standing
(popularity), is striped over `STOCK_SLOTS` rows of `reward_stock_slot`: a reservation
takes a unit from a slot no other transaction holds (`FOR UPDATE SKIP LOCKED`), with a
conditional `UPDATE … WHERE stock > 0`, so concurrent reservations of one popular reward
do not queue behind one row (see migrations/sql/0009_rewards.sql).
"""

from __future__ import annotations

import enum
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
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class RewardKind(enum.StrEnum):
    GOODS = "goods"
    COUPON = "coupon"
    GIFT = "gift"
    DISCOUNT = "discount"
    EXPERIENCE = "experience"


SHIPPED_KINDS = frozenset({RewardKind.GOODS, RewardKind.GIFT})
"""Kinds fulfilled by a shipment; the others by a coupon code."""


class LimitPeriod(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class RewardStatus(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class RedemptionStatus(enum.StrEnum):
    RESERVED = "reserved"
    FULFILLED = "fulfilled"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


STANDING = (RedemptionStatus.RESERVED, RedemptionStatus.FULFILLED, RedemptionStatus.COMPLETED)
"""Redemptions that hold stock and count against a member's limits."""


STOCK_SLOTS = 16
"""Rows a reward's stock is striped over: concurrent reservations take different ones."""


class Reward(Base):
    __tablename__ = "reward"

    id: Mapped[int] = id_column()
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    code: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=RewardStatus.ACTIVE.value)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    """The version in force (the newest)."""
    stock_issued: Mapped[int | None] = mapped_column(BigInteger)
    """Units ever put in stock (initial + restocks); NULL: unlimited. Units left (the sum
    of its slots' stock) + standing redemptions = stock_issued (verify checks it)."""
    created_at: Mapped[datetime] = created_at_column()
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("program_id", "code", name="uq_reward_program_code"),
        CheckConstraint("status IN ('active', 'archived')", name="status"),
        CheckConstraint("stock_issued >= 0", name="stock_issued"),
        CheckConstraint("(status = 'archived') = (archived_at IS NOT NULL)", name="archived"),
        Index("ix_reward_program", "program_id", "id"),
    )


class RewardStockSlot(Base):
    """One stripe of a reward's stock and of its popularity counter."""

    __tablename__ = "reward_stock_slot"

    reward_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reward.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    stock: Mapped[int | None] = mapped_column(BigInteger)
    """Units left in this slot; NULL: unlimited."""
    redeemed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Standing redemptions that took their unit here."""

    __table_args__ = (CheckConstraint("stock >= 0 AND redeemed >= 0", name="counts"),)


class RewardVersion(Base):
    """The terms of a reward from one update to the next; never changed."""

    __tablename__ = "reward_version"

    id: Mapped[int] = id_column()
    reward_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reward.id"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="")
    points_price: Mapped[int] = mapped_column(BigInteger)
    cash_price: Mapped[Decimal] = mapped_column(Numeric(20, 4), server_default="0")
    """Money paid beside the points (points + cash), collected by the merchant."""
    limit_total: Mapped[int | None] = mapped_column(Integer)
    limit_per_period: Mapped[int | None] = mapped_column(Integer)
    limit_period: Mapped[str | None] = mapped_column(Text)
    tier_codes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    """Audience: members holding one of these tiers; empty: everyone."""
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    image_urls: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    reserve_minutes: Mapped[int] = mapped_column(Integer, server_default="30")
    """A reservation not fulfilled within this is released by the job."""
    complete_days: Mapped[int] = mapped_column(Integer, server_default="30")
    """A fulfilment (coupon validity, delivery) not completed within this lapses."""
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("reward_id", "version", name="uq_reward_version"),
        CheckConstraint(
            "kind IN ('goods', 'coupon', 'gift', 'discount', 'experience')", name="kind"
        ),
        CheckConstraint("points_price > 0 AND cash_price >= 0", name="price"),
        CheckConstraint(
            "(limit_total IS NULL OR limit_total > 0)"
            " AND (limit_per_period IS NULL) = (limit_period IS NULL)"
            " AND (limit_per_period IS NULL OR limit_per_period > 0)"
            " AND (limit_period IS NULL OR limit_period IN ('day', 'week', 'month', 'year'))",
            name="limits",
        ),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="window"),
        CheckConstraint(
            "reserve_minutes BETWEEN 1 AND 10080 AND complete_days BETWEEN 1 AND 365",
            name="deadlines",
        ),
    )


class Redemption(Base):
    """One member's redemption of a reward: reserved (points held, stock taken), then
    fulfilled (coupon issued or shipped) and completed (points captured), or cancelled /
    expired (points and stock given back). Changes only under its member account's lock
    (the paying account's: see `paid_program_id`)."""

    __tablename__ = "redemption"

    id: Mapped[int] = id_column()
    # No foreign key to reward: its check would take a KEY SHARE lock on the hot stock
    # row in every reservation. The version's key carries the integrity (verify checks
    # that reward_id is the version's reward).
    reward_id: Mapped[int] = mapped_column(BigInteger)
    reward_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reward_version.id"))
    program_id: Mapped[int] = mapped_column(BigInteger)
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("account.id"))
    hold_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("hold.id"), unique=True)
    stock_slot: Mapped[int] = mapped_column(Integer)
    """The slot its unit came from, and goes back to."""
    points: Mapped[int] = mapped_column(BigInteger)
    cash_price: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    status: Mapped[str] = mapped_column(Text, server_default=RedemptionStatus.RESERVED.value)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Deadline of the open state: fulfil by (reserved), complete by (fulfilled)."""
    idempotency_scope: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    fulfilment: Mapped[str | None] = mapped_column(Text)
    carrier: Mapped[str | None] = mapped_column(Text)
    tracking_number: Mapped[str | None] = mapped_column(Text)
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    """The capture's spend (completed)."""
    created_at: Mapped[datetime] = created_at_column()
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_program_id: Mapped[int] = mapped_column(BigInteger)
    """The program whose points pay: the reward's own (`program_id`), or another merchant's
    whose points the reward's merchant accepts (partner_acceptance). Then `membership_id`
    and `account_id` are of that program, and at completion its merchant owes the
    reward's merchant the points' value (a settlement obligation)."""

    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_redemption_idempotency"),
        CheckConstraint(
            "status IN ('reserved', 'fulfilled', 'completed', 'cancelled', 'expired')",
            name="status",
        ),
        CheckConstraint(
            "(status = 'completed') = (transaction_id IS NOT NULL)"
            " AND (status IN ('reserved', 'fulfilled')) = (closed_at IS NULL)"
            " AND (fulfilment IS NULL) = (fulfilled_at IS NULL)"
            " AND (status NOT IN ('fulfilled', 'completed') OR fulfilment IS NOT NULL)"
            " AND (fulfilment IS NULL OR fulfilment IN ('coupon', 'shipment'))",
            name="state_shape",
        ),
        Index("ix_redemption_member_reward", "membership_id", "reward_id", "created_at"),
        Index(
            "ix_redemption_open",
            "expires_at",
            "id",
            postgresql_where=text("status IN ('reserved', 'fulfilled')"),
        ),
        Index("ix_redemption_reward", "reward_id"),
    )


class CouponStatus(enum.StrEnum):
    ISSUED = "issued"
    USED = "used"
    VOID = "void"


class Coupon(Base):
    """A code issued for a redemption: used once at the counter, or void with it."""

    __tablename__ = "coupon"

    id: Mapped[int] = id_column()
    redemption_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("redemption.id"), unique=True)
    program_id: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(Text, server_default=CouponStatus.ISSUED.value)
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_merchant_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    used_store: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("status IN ('issued', 'used', 'void')", name="status"),
        CheckConstraint(
            "(status = 'used') = (used_at IS NOT NULL AND used_merchant_id IS NOT NULL)",
            name="used_shape",
        ),
    )


class GiftPolicy(Base):
    """Whether and how much members of a program may give each other points."""

    __tablename__ = "gift_policy"

    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    max_points_per_gift: Mapped[int] = mapped_column(BigInteger)
    daily_limit_points: Mapped[int] = mapped_column(BigInteger)
    """Per sender per day (alliance time zone)."""
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint(
            "max_points_per_gift > 0 AND daily_limit_points >= max_points_per_gift", name="limits"
        ),
    )


class Gift(Base):
    """Points one member gave another of the same program: one ledger transaction."""

    __tablename__ = "gift"

    id: Mapped[int] = id_column()
    program_id: Mapped[int] = mapped_column(BigInteger)
    from_membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    to_membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    points: Mapped[int] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text)
    transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id"), unique=True
    )
    recipient_entry_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("points > 0 AND from_membership_id <> to_membership_id", name="shape"),
        Index("ix_gift_sender_day", "from_membership_id", "created_at"),
    )
