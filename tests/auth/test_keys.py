import asyncio
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from alliance.auth.keys import (
    ROTATION_LEEWAY_SECONDS,
    active_signing_key,
    ensure_signing_key,
    jwks,
    rotate_signing_key,
    verification_keys,
)
from alliance.auth.models import SigningKey
from alliance.auth.sealing import load_secret_key, unseal
from alliance.db.engine import Database


async def signing_keys(db: Database) -> list[SigningKey]:
    async with db.transaction() as session:
        return list(await session.scalars(select(SigningKey).order_by(SigningKey.id)))


class TestEnsureSigningKey:
    async def test_creates_one_key_under_concurrency(self, db: Database) -> None:
        kids = await asyncio.gather(*(ensure_signing_key(db) for _ in range(8)))
        assert len(set(kids)) == 1
        async with db.autocommit() as conn:
            assert await conn.scalar(select(func.count()).select_from(SigningKey)) == 1

    async def test_returns_the_existing_key(self, db: Database) -> None:
        assert await ensure_signing_key(db) == await ensure_signing_key(db)

    async def test_stores_the_private_key_sealed(self, db: Database) -> None:
        kid = await ensure_signing_key(db)
        [row] = await signing_keys(db)
        assert row.kid == kid
        assert row.algorithm == "EdDSA"
        assert "d" not in row.public_jwk
        assert row.public_jwk | {"kid": kid} == row.public_jwk
        pkcs8 = unseal(
            load_secret_key(db.settings), row.private_key_sealed, associated_data=kid.encode()
        )
        assert OKPKey.import_key(pkcs8).thumbprint() == kid  # kid is the RFC 7638 thumbprint


class TestActiveSigningKey:
    async def test_creates_a_key_when_none_exists(self, db: Database) -> None:
        kid, key = await active_signing_key(db)
        assert kid == await ensure_signing_key(db)
        assert isinstance(key.private_key, Ed25519PrivateKey)


class TestRotateSigningKey:
    async def test_new_key_signs_old_key_verifies_until_its_tokens_expire(
        self, db: Database
    ) -> None:
        old_kid = await ensure_signing_key(db)
        now = datetime.now(UTC)
        new_kid = await rotate_signing_key(db, now=now)
        assert new_kid != old_kid
        assert (await active_signing_key(db))[0] == new_kid
        old, new = await signing_keys(db)
        ttl = db.settings.access_token_ttl_seconds
        assert old.retired_at == now
        assert old.verify_until == now + timedelta(seconds=ttl + ROTATION_LEEWAY_SECONDS)
        assert new.retired_at is None
        assert new.verify_until is None
        assert set(await verification_keys(db, now=now)) == {old_kid, new_kid}

    async def test_jwks_lists_both_keys_until_the_old_one_stops_verifying(
        self, db: Database
    ) -> None:
        old_kid = await ensure_signing_key(db)
        new_kid = await rotate_signing_key(db)
        document = await jwks(db)
        assert [key["kid"] for key in document["keys"]] == [new_kid, old_kid]
        for key in document["keys"]:
            assert key["alg"] == "EdDSA"
            assert key["use"] == "sig"
            assert key["kty"] == "OKP"
            assert key["crv"] == "Ed25519"
            assert "d" not in key
        [old] = [row for row in await signing_keys(db) if row.kid == old_kid]
        assert old.verify_until is not None
        later = await jwks(db, now=old.verify_until + timedelta(seconds=1))
        assert [key["kid"] for key in later["keys"]] == [new_kid]

    async def test_concurrent_rotations_leave_one_active_key(self, db: Database) -> None:
        await ensure_signing_key(db)
        await asyncio.gather(*(rotate_signing_key(db) for _ in range(4)))
        rows = await signing_keys(db)
        assert len(rows) == 5
        assert [row.kid for row in rows if row.retired_at is None] == [rows[-1].kid]
