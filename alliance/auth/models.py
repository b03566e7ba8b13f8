"""OAuth clients and the keys that sign access tokens."""

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
    LargeBinary,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from alliance.db.base import Base, created_at_column, id_column


class Role(enum.StrEnum):
    OPERATOR = "operator"
    MERCHANT = "merchant"
    FINANCE = "finance"
    MEMBER = "member"
    AUDITOR = "auditor"


class OAuthClient(Base):
    __tablename__ = "oauth_client"

    id: Mapped[int] = id_column()
    client_id: Mapped[str] = mapped_column(Text, unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    """SHA-256 of the secret. Secrets are 256 random bits, so a slow KDF adds nothing."""
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    merchant_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("merchant.id"))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    created_at: Mapped[datetime] = created_at_column()
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("role IN ('operator', 'merchant', 'finance', 'auditor')", name="role"),
        CheckConstraint("role <> 'merchant' OR merchant_id IS NOT NULL", name="merchant_bound"),
        CheckConstraint(
            "role NOT IN ('operator', 'auditor') OR merchant_id IS NULL", name="alliance_wide"
        ),
    )


class SigningKey(Base):
    """An Ed25519 key pair; the newest unretired key signs, every unexpired key verifies."""

    __tablename__ = "signing_key"

    id: Mapped[int] = id_column()
    kid: Mapped[str] = mapped_column(Text, unique=True)
    algorithm: Mapped[str] = mapped_column(Text, server_default="EdDSA")
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    private_key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """PKCS#8 private key sealed with AES-GCM under the configured secret key."""
    created_at: Mapped[datetime] = created_at_column()
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """No longer signs from this time; still verifies until `verify_until`."""
    verify_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # At most one key signs at a time, whatever the callers do.
        Index(
            "uq_signing_key_active",
            text("(true)"),
            unique=True,
            postgresql_where=text("retired_at IS NULL"),
        ),
        CheckConstraint("retired_at IS NULL OR verify_until IS NOT NULL", name="retired_window"),
    )
