"""The Ed25519 keys that sign access tokens: created, rotated, published as a JWKS.

The newest unretired key signs; every key whose `verify_until` is unset or still
ahead verifies. Rotation retires the signing key with `verify_until` = now + the
access-token lifetime + a leeway, so each token it signed keeps verifying until
it expires (`issue_access_token` refuses longer lifetimes for that reason).

The kid is the RFC 7638 thumbprint of the public key. Private keys are stored as
PKCS#8, sealed under the alliance secret key with the kid as associated data, so
a sealed key copied onto another row does not unseal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from joserfc.jwk import OKPKey
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.auth.models import SigningKey
from alliance.auth.sealing import load_secret_key, seal, unseal
from alliance.db.engine import Database

ALGORITHM = "EdDSA"
ROTATION_LEEWAY_SECONDS = 60
"""Covers a token signed by another process just before it saw the rotation."""

_LOCK_ID = 0x7061_7369_676E  # advisory lock serialising key creation and rotation
_private_keys: dict[str, OKPKey] = {}
"""Unsealed private keys by kid. A kid is a hash of its key, so an entry never goes stale."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    key: OKPKey
    """Public key only."""
    verify_until: datetime | None


_active_key = (
    select(SigningKey.kid, SigningKey.private_key_sealed)
    .where(SigningKey.retired_at.is_(None))
    .order_by(SigningKey.id.desc())
    .limit(1)
)


async def ensure_signing_key(db: Database) -> str:
    """The kid of the active signing key, created first if there is none."""
    async with db.autocommit() as conn:
        kid = (await conn.execute(_active_key)).scalar()
    if kid is not None:
        return kid
    async with db.transaction() as session:
        await _lock_signing_keys(session)
        kid = (await session.execute(_active_key)).scalar()
        if kid is None:
            kid = await _insert_signing_key(session, db)
        return kid


async def rotate_signing_key(db: Database, *, now: datetime | None = None) -> str:
    """A new active key; the previous one stops signing now and verifies until its tokens expire."""
    now = now or datetime.now(UTC)
    verify_until = now + timedelta(
        seconds=db.settings.access_token_ttl_seconds + ROTATION_LEEWAY_SECONDS
    )
    async with db.transaction() as session:
        await _lock_signing_keys(session)
        await session.execute(
            update(SigningKey)
            .where(SigningKey.retired_at.is_(None))
            .values(retired_at=now, verify_until=verify_until)
        )
        return await _insert_signing_key(session, db)


async def active_signing_key(db: Database) -> tuple[str, OKPKey]:
    """The kid and private key that sign new tokens (one is created if none exists)."""
    async with db.autocommit() as conn:
        row = (await conn.execute(_active_key)).first()
    if row is None:
        await ensure_signing_key(db)
        async with db.autocommit() as conn:
            row = (await conn.execute(_active_key)).one()
    kid: str = row.kid
    key = _private_keys.get(kid)
    if key is None:
        pkcs8 = unseal(
            load_secret_key(db.settings), row.private_key_sealed, associated_data=kid.encode()
        )
        raw_key = load_der_private_key(pkcs8, password=None)
        assert isinstance(raw_key, Ed25519PrivateKey), "signing keys are Ed25519"
        key = _private_keys[kid] = OKPKey.import_key(raw_key, {"kid": kid})
    return kid, key


async def load_verification_keys(
    db: Database, *, now: datetime | None = None
) -> dict[str, VerificationKey]:
    """Every key that still verifies, newest first, with the time it stops verifying."""
    now = now or datetime.now(UTC)
    async with db.autocommit() as conn:
        rows = (
            await conn.execute(
                select(SigningKey.kid, SigningKey.public_jwk, SigningKey.verify_until)
                .where(or_(SigningKey.verify_until.is_(None), SigningKey.verify_until > now))
                .order_by(SigningKey.id.desc())
            )
        ).all()
    return {
        row.kid: VerificationKey(row.kid, OKPKey.import_key(row.public_jwk), row.verify_until)
        for row in rows
    }


async def verification_keys(db: Database, *, now: datetime | None = None) -> dict[str, OKPKey]:
    keys = await load_verification_keys(db, now=now)
    return {kid: entry.key for kid, entry in keys.items()}


async def jwks(db: Database, *, now: datetime | None = None) -> dict[str, Any]:
    """The RFC 7517 JWK Set of the verifying keys, for `/.well-known/jwks.json`."""
    keys = await load_verification_keys(db, now=now)
    return {"keys": [_public_jwk(entry.key, entry.kid) for entry in keys.values()]}


def _public_jwk(key: OKPKey, kid: str) -> dict[str, Any]:
    return dict(key.as_dict(private=False, kid=kid, alg=ALGORITHM, use="sig"))


async def _lock_signing_keys(session: AsyncSession) -> None:
    # Transaction-scoped: released by COMMIT/ROLLBACK, so an error cannot leak it.
    await session.execute(select(func.pg_advisory_xact_lock(_LOCK_ID)))


async def _insert_signing_key(session: AsyncSession, db: Database) -> str:
    raw_key = Ed25519PrivateKey.generate()
    key = OKPKey.import_key(raw_key)
    kid = key.thumbprint()
    pkcs8 = raw_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    session.add(
        SigningKey(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk=_public_jwk(key, kid),
            private_key_sealed=seal(
                load_secret_key(db.settings), pkcs8, associated_data=kid.encode()
            ),
        )
    )
    await session.flush()
    _private_keys[kid] = OKPKey.import_key(raw_key, {"kid": kid})
    return kid
