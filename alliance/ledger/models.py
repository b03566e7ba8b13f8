"""The double-entry points ledger.

Sign convention: a posting's `amount` is the change of its account's balance.
Awarding 100 points posts +100 to the member account and -100 to the program's
`issued` system account, so the postings of a transaction sum to zero per
program and the system accounts carry the mirror image of what members hold.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class AccountKind(enum.StrEnum):
    MEMBER = "member"
    ISSUED = "issued"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    EXCHANGED_OUT = "exchanged_out"
    EXCHANGED_IN = "exchanged_in"
    ADJUSTMENT = "adjustment"
    HELD = "held"
    CLAWBACK = "clawback"
    """Points clawed back from members who had already spent them: the mirror of their debts."""
    FEE = "fee"
    """Exchange fees taken in the program's points (the alliance is owed their value)."""


SYSTEM_ACCOUNT_KINDS = tuple(kind for kind in AccountKind if kind is not AccountKind.MEMBER)


class TransactionKind(enum.StrEnum):
    AWARD = "award"
    """A fixed number of points, with a reason."""
    EARN = "earn"
    """Points computed by the program's earning rules (a purchase); `details` explains them."""
    SPEND = "spend"
    EXPIRE = "expire"
    REVERSE = "reverse"
    """Claws back what an earn gave, for a refunded purchase (`reverses_id` names the earn)."""
    OPENING = "opening"
    """An opening balance imported from a merchant's previous system."""
    REFUND = "refund"
    """Points of a captured spend given back (`reverses_id` names the spend)."""
    EXCHANGE = "exchange"
    """Points of one program turned into points of another at a published rate."""
    PARTNER_REDEMPTION = "partner_redemption"
    """Points of a program spent at a partner merchant (cross-brand redemption)."""
    MERGE = "merge"
    """Points and lots carried to another member's account when two members are merged or a
    membership is unlinked (alliance/identity/merge.py)."""
    GIFT = "gift"
    """Points one member gave another of the same program (alliance/rewards/gifting.py)."""
    ADJUSTMENT = "adjustment"
    """A manual credit or debit by merchant staff, against the `adjustment` account."""


class Account(Base):
    """A member's points account in one program, or one of the program's system accounts.

    Never deleted nor renumbered (a trigger refuses): postings and lots refer to it.
    Only member accounts keep a cached `balance`/`held`: system accounts are
    touched by every transaction of their program, so a running balance row
    there would serialise the program. Their balance is the sum of postings.
    """

    __tablename__ = "account"

    id: Mapped[int] = id_column()
    program_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("program.id"))
    kind: Mapped[str] = mapped_column(Text)
    membership_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("membership.id"), unique=True
    )
    member_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("member.id"))
    balance: Mapped[int | None] = mapped_column(BigInteger)
    held: Mapped[int | None] = mapped_column(BigInteger)
    debt: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Points clawed back after the member had spent them, repaid first by future credits."""
    created_at: Mapped[datetime] = created_at_column()
    folded_into_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("account.id"))
    """The account a merge folded this one into (alliance/identity/merge.py): where refunds
    of what was earned or paid here now go."""

    __table_args__ = (
        CheckConstraint(
            "kind IN ('member', 'issued', 'redeemed', 'expired', 'exchanged_out',"
            " 'exchanged_in', 'adjustment', 'held', 'clawback', 'fee')",
            name="kind",
        ),
        CheckConstraint(
            "(kind = 'member') = (membership_id IS NOT NULL AND member_id IS NOT NULL"
            " AND balance IS NOT NULL AND held IS NOT NULL)",
            name="member_account_shape",
        ),
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("held >= 0 AND held <= balance", name="held_within_balance"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
        Index(
            "uq_account_system_kind",
            "program_id",
            "kind",
            unique=True,
            postgresql_where=text("membership_id IS NULL"),
        ),
        Index("ix_account_program_member", "program_id", postgresql_where=text("kind = 'member'")),
        # Room on each page for HOT updates of the balance columns (migration 0016): at
        # 50, every row of a page can be updated once in one transaction (an import).
        {"postgresql_with": {"fillfactor": 50}},
    )


class LedgerTransaction(Base):
    __tablename__ = "ledger_transaction"

    id: Mapped[int] = id_column()
    kind: Mapped[str] = mapped_column(Text)
    member_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("member.id"))
    client_id: Mapped[str | None] = mapped_column(Text)
    """The OAuth client that submitted it (None for the system's own jobs)."""
    idempotency_scope: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    """SHA-256 of the canonical request: a replay must match it exactly."""
    reason: Mapped[str | None] = mapped_column(Text)
    reverses_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("ledger_transaction.id"))
    """For reversals: the earn being clawed back."""
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """For earns: the breakdown by rule version (what a member sees as "why these points")."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_ledger_transaction_idempotency"
        ),
        CheckConstraint(
            "kind IN ('award', 'earn', 'spend', 'expire', 'reverse', 'opening', 'refund',"
            " 'exchange', 'partner_redemption', 'merge', 'gift', 'adjustment')",
            name="kind",
        ),
        Index(
            "ix_ledger_transaction_reverses",
            "reverses_id",
            postgresql_where=text("reverses_id IS NOT NULL"),
        ),
        CheckConstraint(
            "(idempotency_key IS NULL) = (idempotency_scope IS NULL)", name="idempotency_pair"
        ),
    )


class Posting(Base):
    """One leg of a ledger transaction. Immutable: a trigger rejects UPDATE and DELETE."""

    __tablename__ = "posting"

    id: Mapped[int] = id_column()
    transaction_id: Mapped[int] = mapped_column(BigInteger, index=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    """No foreign keys on the transaction and the account: the `posting_balanced` trigger
    checks both once per statement (a foreign key checks each row: an SPI query and a
    row lock apiece: 40 % of a bulk import's time), and verify checks them again."""
    program_id: Mapped[int] = mapped_column(BigInteger)
    """Its account's program, copied for the per-program sums. No foreign key of its own:
    the account's key implies it (verify checks they agree), and a check per row would
    cost every movement and import."""
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    """The member whose account this is; on system legs, the transaction's member.

    Every leg carries one, so the ledger can be distributed by member."""
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int | None] = mapped_column(BigInteger)
    """The member account's balance after this posting; None on system accounts."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        # The one history index: a member's postings newest first. A membership's
        # history filters it by account (a member has a handful of accounts), so
        # no second index has to be written on every movement. It carries what
        # histories filter on, so a page's ids come from it alone (migration 0018).
        Index(
            "ix_posting_member_history",
            "member_id",
            text("id DESC"),
            postgresql_where=text("balance_after IS NOT NULL"),
            postgresql_include=["account_id", "program_id", "created_at"],
        ),
    )


class Lot(Base):
    """Points from one earn, consumed soonest-expiring first."""

    __tablename__ = "lot"

    id: Mapped[int] = id_column()
    account_id: Mapped[int] = mapped_column(BigInteger)
    """No foreign keys on the account and the transaction, as on postings: the
    `lot_references` trigger checks both once per statement, and verify again."""
    program_id: Mapped[int] = mapped_column(BigInteger)
    """Its account's program, copied for the per-program sums. No foreign key of its own:
    the account's key implies it (verify checks they agree), and a check per row would
    cost every movement and import."""
    member_id: Mapped[int] = mapped_column(BigInteger)
    transaction_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    origin_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    """For a lot a merge re-created on the survivor's account: the transaction that first
    credited its points (a refund of that purchase takes them first); NULL: its own
    `transaction_id`. No foreign key: a check per lot would cost every credit."""

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_within_amount"),
        Index(
            "ix_lot_open",
            "account_id",
            "expires_at",
            "id",
            postgresql_where=text("remaining > 0"),
        ),
        # The expiry job walks due lots in (expires_at, id) order.
        Index("ix_lot_expiring", "expires_at", "id", postgresql_where=text("remaining > 0")),
    )


class LotConsumption(Base):
    """How many points of which lot a transaction took: the trail for refunds and audits."""

    __tablename__ = "lot_consumption"

    transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id"), primary_key=True
    )
    lot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("lot.id"), primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        Index("ix_lot_consumption_lot", "lot_id"),
    )


class PurchaseRefund(Base):
    """A refund of (part of) a purchase, and the points it clawed back.

    Recorded even when it claws back nothing (a small partial refund rounds to 0
    points), so later refunds of the same order see how much was refunded before."""

    __tablename__ = "purchase_refund"

    id: Mapped[int] = id_column()
    merchant_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    refund_id: Mapped[str] = mapped_column(Text)
    """The merchant's refund id: the idempotency key of the refund."""
    earn_transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    clawback: Mapped[int] = mapped_column(BigInteger)
    """Points the refund takes back: taken + debt + written_off."""
    taken: Mapped[int] = mapped_column(BigInteger)
    """From the member's balance (the order's own lots first)."""
    debt: Mapped[int] = mapped_column(BigInteger)
    """Added to the member's clawback debt (policy `debt`)."""
    written_off: Mapped[int] = mapped_column(BigInteger)
    """Absorbed by the program's adjustment account (policy `write_off`)."""
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("merchant_id", "refund_id", name="uq_purchase_refund_refund_id"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "taken >= 0 AND debt >= 0 AND written_off >= 0"
            " AND clawback = taken + debt + written_off",
            name="clawback_split",
        ),
        Index("ix_purchase_refund_earn", "earn_transaction_id"),
    )


class HoldStatus(enum.StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


class Hold(Base):
    """Points reserved on a member account (two-phase: authorize, then capture or void).

    While authorized its points are in the account's `held`, which no spend, expiry or
    other hold can use; capture spends up to them, void and expiry release them."""

    __tablename__ = "hold"

    id: Mapped[int] = id_column()
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("account.id"))
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    program_id: Mapped[int] = mapped_column(BigInteger)
    member_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(Text)
    """`discount` (points off a bill at the counter) or `reward` (a reserved redemption)."""
    points: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text, server_default=HoldStatus.AUTHORIZED.value)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idempotency_scope: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transaction.id")
    )
    """The capture's spend."""
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_hold_idempotency"),
        CheckConstraint("kind IN ('discount', 'reward')", name="kind"),
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("status IN ('authorized', 'captured', 'voided', 'expired')", name="status"),
        CheckConstraint(
            "(status = 'captured') = (captured IS NOT NULL AND transaction_id IS NOT NULL)"
            " AND (captured IS NULL OR captured BETWEEN 1 AND points)"
            " AND (status = 'authorized') = (closed_at IS NULL)",
            name="state_shape",
        ),
        Index("ix_hold_account_open", "account_id", postgresql_where=text("status = 'authorized'")),
        Index(
            "ix_hold_expiring", "expires_at", "id", postgresql_where=text("status = 'authorized'")
        ),
    )
