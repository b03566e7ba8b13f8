"""OAuth clients: the merchant apps and service accounts that obtain access tokens.

A secret is 32 random bytes shown once at creation; only its SHA-256 is stored.
A secret with 256 bits of entropy cannot be guessed or brute-forced from its
hash, so a slow password KDF (bcrypt, argon2) would only cost CPU on every
token request without adding security.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from alliance.auth.actor import Actor
from alliance.auth.models import OAuthClient, Role
from alliance.db.engine import Database
from alliance.db.errors import constraint_name
from alliance.errors import AlreadyExists, InvalidInput, NotFound
from alliance.programs.models import Merchant
from alliance.validation import clean_text

CLIENT_ROLES = (Role.OPERATOR, Role.MERCHANT, Role.FINANCE, Role.AUDITOR)
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{3,64}$")
"""URL-unreserved characters only, so a client id survives HTTP Basic's form-encoding as is."""
MAX_SECRET_LENGTH = 256
_UNUSED_HASH = hashlib.sha256(b"no such client").digest()


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str
    role: Role
    merchant_id: int | None
    scopes: frozenset[str]

    @classmethod
    def from_row(cls, row: Any) -> ClientRecord:
        return cls(row.client_id, row.name, Role(row.role), row.merchant_id, frozenset(row.scopes))

    def actor(self, scopes: frozenset[str] | None = None) -> Actor:
        """The actor this client acts as, with `scopes` (default: all of its own)."""
        return Actor(
            self.role,
            f"client:{self.client_id}",
            self.client_id,
            merchant_id=self.merchant_id,
            scopes=self.scopes if scopes is None else scopes,
        )


_client_columns = (
    OAuthClient.client_id,
    OAuthClient.name,
    OAuthClient.role,
    OAuthClient.merchant_id,
    OAuthClient.scopes,
)


async def create_client(
    db: Database,
    *,
    name: str,
    role: Role,
    merchant_id: int | None = None,
    client_id: str | None = None,
) -> tuple[str, str]:
    """Register a client; returns its id and secret. The secret cannot be shown again."""
    name = clean_text(name, "name", max_length=200)
    check_client_binding(role, merchant_id)
    if client_id is None:
        client_id = f"{role.value}-{secrets.token_hex(8)}"
    elif not CLIENT_ID_PATTERN.match(client_id):
        raise InvalidInput(
            "clientId must be 3-64 characters of A-Z a-z 0-9 . _ ~ -", field=("clientId",)
        )
    secret = secrets.token_urlsafe(32)
    async with db.transaction() as session:
        if merchant_id is not None and await session.get(Merchant, merchant_id) is None:
            raise NotFound("merchant not found", field=("merchantId",))
        session.add(
            OAuthClient(
                client_id=client_id,
                secret_hash=_hash_secret(secret),
                name=name,
                role=role.value,
                merchant_id=merchant_id,
            )
        )
        try:
            await session.flush()
        except IntegrityError as error:
            if constraint_name(error) == "uq_oauth_client_client_id":
                raise AlreadyExists(
                    f"client id {client_id} is taken", field=("clientId",)
                ) from None
            raise
    return client_id, secret


def check_client_binding(role: Role, merchant_id: int | None) -> None:
    """Which roles a client may have, and which of them are bound to a merchant."""
    if role not in CLIENT_ROLES:
        raise InvalidInput(
            f"role {role.value} is not a client role (member tokens come from a merchant app)",
            field=("role",),
        )
    if role is Role.MERCHANT and merchant_id is None:
        raise InvalidInput("a merchant client must be bound to a merchant", field=("merchantId",))
    if role in (Role.OPERATOR, Role.AUDITOR) and merchant_id is not None:
        raise InvalidInput(
            f"an {role.value} client is alliance-wide and takes no merchant", field=("merchantId",)
        )


async def authenticate_client(db: Database, client_id: str, secret: str) -> ClientRecord | None:
    """The client, if the secret is its own and it is not disabled; otherwise None."""
    if not client_id or not secret or len(secret) > MAX_SECRET_LENGTH:
        return None
    async with db.autocommit() as conn:
        row = (
            await conn.execute(
                select(*_client_columns, OAuthClient.secret_hash, OAuthClient.disabled_at).where(
                    OAuthClient.client_id == client_id
                )
            )
        ).first()
    # Compare even for an unknown client, so timing does not tell which ids exist.
    expected = row.secret_hash if row is not None else _UNUSED_HASH
    matches = hmac.compare_digest(_hash_secret(secret), expected)
    if row is None or not matches or row.disabled_at is not None:
        return None
    return ClientRecord.from_row(row)


async def get_client(db: Database, client_id: str) -> ClientRecord | None:
    """An enabled client by id; None for unknown and disabled clients alike."""
    async with db.autocommit() as conn:
        row = (
            await conn.execute(
                select(*_client_columns).where(
                    OAuthClient.client_id == client_id, OAuthClient.disabled_at.is_(None)
                )
            )
        ).first()
    return ClientRecord.from_row(row) if row is not None else None


async def disable_client(db: Database, client_id: str, *, now: datetime | None = None) -> bool:
    """Refuse the client's credentials from now on; False if unknown or already disabled.

    Tokens it already holds stay valid until they expire (at most the token lifetime).
    """
    async with db.autocommit() as conn:
        result = await conn.execute(
            update(OAuthClient)
            .where(OAuthClient.client_id == client_id, OAuthClient.disabled_at.is_(None))
            .values(disabled_at=now or datetime.now(UTC))
            .returning(OAuthClient.id)
        )
        return result.first() is not None


def _hash_secret(secret: str) -> bytes:
    # surrogatepass: a lone surrogate from a badly decoded form must not raise.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
