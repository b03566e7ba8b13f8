"""Identity federation tables: identifiers, verifications, consents, merges, privacy policy.

No column holds a phone number or an e-mail address in the clear: an identifier is a
keyed HMAC (for matching) and an AES-GCM ciphertext (for display), each with the id of
the key that made it, so keys can rotate.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
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
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class IdentifierKind(enum.StrEnum):
    PHONE = "phone"
    EMAIL = "email"


class ConsentPurpose(enum.StrEnum):
    PARTNER_BALANCES = "partner_balances"
    """The merchant may see the member's balances at the alliance's other programs."""
    SHARE_TIER = "share_tier"
    """The merchant may see the member's tiers at the other programs."""
    MARKETING = "marketing"
    """The merchant may send the member marketing."""


class MemberIdentifier(Base):
    """A verified phone or e-mail of a member: how memberships find their member."""

    __tablename__ = "member_identifier"

    id: Mapped[int] = id_column()
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    digest: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    """HMAC-SHA256 of `kind:normalised identifier` under the identity key `key_id`. Unique:
    one identifier, one member, however many merchants link it at once."""
    key_id: Mapped[str] = mapped_column(Text)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """The normalised identifier, AES-GCM under the identity key `key_id` (for display)."""
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("kind IN ('phone', 'email')", name="kind"),)


class Verification(Base):
    """A one-time code sent to an identifier, to link a membership through it."""

    __tablename__ = "verification"

    id: Mapped[int] = id_column()
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    client_id: Mapped[str] = mapped_column(Text)
    """The client that asked (rate limits, and only it may confirm)."""
    actor_member_id: Mapped[int | None] = mapped_column(BigInteger)
    """For member tokens: the member who asked (only they may confirm)."""
    kind: Mapped[str] = mapped_column(Text)
    digest: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(Text)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Cleared once the verification is settled (confirmed, expired or exhausted)."""
    code_salt: Mapped[bytes] = mapped_column(LargeBinary)
    code_digest: Mapped[bytes] = mapped_column(LargeBinary)
    """HMAC of salt and code under the identity key: a leaked table cannot be brute-forced."""
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("kind IN ('phone', 'email')", name="kind"),
        CheckConstraint("attempts >= 0 AND attempts <= max_attempts", name="attempts"),
        # Rate limits count recent verifications per identifier and per client.
        Index("ix_verification_digest", "digest", "created_at"),
        Index("ix_verification_client", "client_id", "created_at"),
        Index("ix_verification_membership", "membership_id"),
    )


class Consent(Base):
    """A member's consent to one merchant for one purpose; withdrawn keeps the row."""

    __tablename__ = "consent"

    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"), primary_key=True)
    merchant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("merchant.id"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(Text, primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set when withdrawn; a later grant clears it (both are in the audit trail)."""

    __table_args__ = (
        CheckConstraint(
            "purpose IN ('partner_balances', 'share_tier', 'marketing')", name="purpose"
        ),
        CheckConstraint("withdrawn_at IS NULL OR withdrawn_at >= granted_at", name="order"),
    )


class MemberMerge(Base):
    """Two members found to be one person: `absorbed` folded into `survivor`."""

    __tablename__ = "member_merge"

    id: Mapped[int] = id_column()
    survivor_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"))
    absorbed_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"))
    initiated_by: Mapped[str] = mapped_column(Text)
    """`operator`, or `verification` (the member proved both sides hold one identifier)."""
    idempotency_scope: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    memberships_moved: Mapped[int] = mapped_column(Integer)
    """Memberships re-homed to the survivor with their accounts as they are."""
    accounts_folded: Mapped[int] = mapped_column(Integer)
    points_moved: Mapped[int] = mapped_column(BigInteger)
    """Points the folds carried between accounts by `merge` ledger transactions."""
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_member_merge_idempotency"
        ),
        CheckConstraint("survivor_id <> absorbed_id", name="distinct_members"),
        CheckConstraint("initiated_by IN ('operator', 'verification')", name="initiated_by"),
        Index("ix_member_merge_absorbed", "absorbed_id"),
    )


class MembershipUnlink(Base):
    """A membership detached from its member onto a member of its own (idempotent by key)."""

    __tablename__ = "membership_unlink"

    id: Mapped[int] = id_column()
    membership_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("membership.id"))
    from_member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"))
    to_member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("member.id"))
    idempotency_scope: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint(
            "idempotency_scope", "idempotency_key", name="uq_membership_unlink_idempotency"
        ),
        Index("ix_membership_unlink_membership", "membership_id"),
    )


class PrivacyPolicy(Base):
    """The alliance's identity and retention settings (one row, set by the operator)."""

    __tablename__ = "privacy_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, server_default="1")
    code_ttl_seconds: Mapped[int] = mapped_column(Integer, server_default="600")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="5")
    per_identifier_per_hour: Mapped[int] = mapped_column(Integer, server_default="5")
    per_client_per_hour: Mapped[int] = mapped_column(Integer, server_default="200")
    verification_retention_days: Mapped[int] = mapped_column(Integer, server_default="30")
    """Verifications (and their delivered codes in the outbox) are deleted after this."""
    erase_requires_settlement: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    """Refuse `eraseMember` while cross-merchant obligations on the member are unsettled."""
    updated_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint(
            "code_ttl_seconds BETWEEN 60 AND 3600 AND max_attempts BETWEEN 1 AND 10"
            " AND per_identifier_per_hour BETWEEN 1 AND 100"
            " AND per_client_per_hour BETWEEN 1 AND 100000"
            " AND verification_retention_days BETWEEN 1 AND 3650",
            name="ranges",
        ),
    )
