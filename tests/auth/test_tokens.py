import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from alliance.auth.actor import Actor
from alliance.auth.keys import active_signing_key, ensure_signing_key, rotate_signing_key
from alliance.auth.models import Role
from alliance.auth.tokens import (
    TokenVerifier,
    access_token_claims,
    actor_from_claims,
    issue_access_token,
)
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import ErrorCode, InvalidInput, Unauthenticated
from tests.factories import OPERATOR

MERCHANT = Actor(Role.MERCHANT, "client:pos-1", "pos-1", merchant_id=7)
MEMBER = Actor(Role.MEMBER, "member:42", "pos-1", merchant_id=7, member_id=42, membership_id=420)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def hs256(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def claims_for(settings: Settings, actor: Actor = MERCHANT, /, **overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims = access_token_claims(
        actor, issuer=settings.issuer, audience=settings.audience, issued_at=now, ttl_seconds=600
    )
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


async def signed_by_active_key(db: Database, claims: dict[str, Any], **header: Any) -> str:
    kid, key = await active_signing_key(db)
    assert isinstance(key.private_key, Ed25519PrivateKey)
    return compact(
        {"typ": "at+jwt", "alg": "EdDSA", "kid": kid} | header, claims, key.private_key.sign
    )


async def rejected(verifier: TokenVerifier, token: str, **kwargs: Any) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token, **kwargs)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value.message


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestIssueAccessToken:
    async def test_client_token_round_trip(self, db: Database, settings: Settings) -> None:
        token, expires_in = await issue_access_token(db, actor=MERCHANT)
        assert expires_in == settings.access_token_ttl_seconds
        header = json.loads(unb64(token.split(".")[0]))
        assert header == {"typ": "at+jwt", "alg": "EdDSA", "kid": await ensure_signing_key(db)}
        claims = json.loads(unb64(token.split(".")[1]))
        assert claims["sub"] == "client:pos-1"
        assert claims["client_id"] == "pos-1"
        assert claims["merchant_id"] == 7
        assert claims["role"] == "merchant"
        assert claims["exp"] - claims["iat"] == expires_in
        assert {"iss", "aud", "nbf", "jti"} <= claims.keys()
        assert "member_id" not in claims
        assert await TokenVerifier(db, settings).verify(token) == MERCHANT

    async def test_member_token_round_trip(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MEMBER)
        claims = json.loads(unb64(token.split(".")[1]))
        assert claims["sub"] == "member:42"
        assert claims["act"] == {"sub": "pos-1"}
        assert claims["member_id"] == 42
        assert claims["membership_id"] == 420
        assert await TokenVerifier(db, settings).verify(token) == MEMBER

    async def test_alliance_wide_token_has_no_merchant(
        self, db: Database, settings: Settings
    ) -> None:
        token, _ = await issue_access_token(db, actor=OPERATOR)
        assert "merchant_id" not in json.loads(unb64(token.split(".")[1]))
        assert await TokenVerifier(db, settings).verify(token) == OPERATOR

    async def test_shorter_lifetime(self, db: Database) -> None:
        _, expires_in = await issue_access_token(db, actor=MERCHANT, ttl_seconds=60)
        assert expires_in == 60

    @pytest.mark.parametrize("ttl_seconds", [0, -1, 3601])
    async def test_lifetime_beyond_key_overlap_is_refused(
        self, db: Database, ttl_seconds: int
    ) -> None:
        with pytest.raises(InvalidInput):
            await issue_access_token(db, actor=MERCHANT, ttl_seconds=ttl_seconds)

    @pytest.mark.parametrize(
        "actor",
        [
            Actor(Role.MERCHANT, "client:pos-1", "pos-1"),  # unbound merchant
            Actor(Role.MERCHANT, "client:other", "pos-1", merchant_id=7),
            Actor(Role.MEMBER, "member:42", "pos-1", merchant_id=7, member_id=42),
            Actor(Role.OPERATOR, "client:ops", "ops", member_id=3),
        ],
    )
    async def test_inconsistent_actor_is_refused(self, db: Database, actor: Actor) -> None:
        with pytest.raises(InvalidInput):
            await issue_access_token(db, actor=actor)


class TestActorFromClaims:
    def test_scopes(self, settings: Settings) -> None:
        actor = dataclasses.replace(OPERATOR, scopes=frozenset({"b", "a"}))
        claims = claims_for(settings, actor)
        assert claims["scope"] == "a b"
        assert actor_from_claims(claims) == actor

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"role": "superuser"}, "unknown role"),
            ({"role": 1}, "unknown role"),
            ({"sub": "client:someone-else"}, "subject"),
            ({"merchant_id": True}, "merchant_id"),
            ({"member_id": 5}, "member claims"),
        ],
    )
    def test_inconsistent_claims(
        self, settings: Settings, overrides: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(Unauthenticated, match=message):
            actor_from_claims(claims_for(settings, **overrides))

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"act": {"sub": "another-app"}}, "act.sub"),
            ({"sub": "member:43"}, "subject"),
            ({"membership_id": None}, "membership_id"),
            ({"merchant_id": None}, "merchant"),
        ],
    )
    def test_inconsistent_member_claims(
        self, settings: Settings, overrides: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(Unauthenticated, match=message):
            actor_from_claims(claims_for(settings, MEMBER, **overrides))


class TestTokenVerifier:
    async def test_verified_token_is_cached(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MERCHANT)
        verifier = TokenVerifier(db, settings)
        first = await verifier.verify(token)
        with db.count_statements() as counter:
            assert await verifier.verify(token) is first
        assert counter.count == 0

    async def test_cache_is_bounded(self, db: Database, settings: Settings) -> None:
        verifier = TokenVerifier(db, settings, cache_size=2)
        tokens = [(await issue_access_token(db, actor=MERCHANT))[0] for _ in range(3)]
        for token in tokens:
            await verifier.verify(token)
        assert list(verifier._cache) == tokens[1:]

    async def test_expired(self, db: Database, settings: Settings) -> None:
        issued = datetime.now(UTC) - timedelta(seconds=120)
        token, _ = await issue_access_token(db, actor=MERCHANT, ttl_seconds=60, now=issued)
        assert "expired" in await rejected(TokenVerifier(db, settings), token)

    async def test_expired_while_cached(self, db: Database, settings: Settings) -> None:
        token, expires_in = await issue_access_token(db, actor=MERCHANT)
        verifier = TokenVerifier(db, settings)
        await verifier.verify(token)
        later = datetime.now(UTC) + timedelta(seconds=expires_in + 1)
        assert "expired" in await rejected(verifier, token, now=later)
        assert "expired" in await rejected(verifier, token, now=later)  # evicted, checked again

    async def test_not_yet_valid(self, db: Database, settings: Settings) -> None:
        issued = datetime.now(UTC) + timedelta(minutes=10)
        token, _ = await issue_access_token(db, actor=MERCHANT, now=issued)
        verifier = TokenVerifier(db, settings)
        assert "not yet valid" in await rejected(verifier, token)
        assert await verifier.verify(token, now=issued) == MERCHANT

    async def test_tampered_payload(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MERCHANT)
        header, payload, signature = token.split(".")
        claims = json.loads(unb64(payload)) | {"role": "operator", "sub": "client:pos-1"}
        claims.pop("merchant_id")
        forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
        assert "signature" in await rejected(TokenVerifier(db, settings), forged)

    async def test_tampered_signature(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MERCHANT)
        header, payload, signature = token.split(".")
        flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
        forged = f"{header}.{payload}.{flipped}"
        assert "signature" in await rejected(TokenVerifier(db, settings), forged)

    async def test_alg_none(self, db: Database, settings: Settings) -> None:
        kid = await ensure_signing_key(db)
        header = {"typ": "at+jwt", "alg": "none", "kid": kid}
        forged = compact(header, claims_for(settings), lambda _: b"")
        assert "algorithm 'none'" in await rejected(TokenVerifier(db, settings), forged)

    async def test_hs256_keyed_with_the_public_key(self, db: Database, settings: Settings) -> None:
        kid, key = await active_signing_key(db)
        public_pem = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for secret in (public_pem, unb64(str(key["x"]))):
            header = {"typ": "at+jwt", "alg": "HS256", "kid": kid}
            forged = compact(header, claims_for(settings), hs256(secret))
            assert "algorithm 'HS256'" in await rejected(TokenVerifier(db, settings), forged)

    async def test_rs256(self, db: Database, settings: Settings) -> None:
        kid = await ensure_signing_key(db)
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = compact(
            {"typ": "at+jwt", "alg": "RS256", "kid": kid},
            claims_for(settings),
            lambda data: rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
        )
        assert "algorithm 'RS256'" in await rejected(TokenVerifier(db, settings), forged)

    async def test_algorithm_is_refused_before_any_key_lookup(
        self, db: Database, settings: Settings
    ) -> None:
        header = {"typ": "at+jwt", "alg": "HS256", "kid": "nope"}
        forged = compact(header, claims_for(settings), hs256(b"k"))
        with db.count_statements() as counter:
            await rejected(TokenVerifier(db, settings), forged)
        assert counter.count == 0

    async def test_unknown_kid(self, db: Database, settings: Settings) -> None:
        await ensure_signing_key(db)
        stranger = Ed25519PrivateKey.generate()
        forged = compact(
            {"typ": "at+jwt", "alg": "EdDSA", "kid": "stranger"},
            claims_for(settings),
            stranger.sign,
        )
        assert "unknown key" in await rejected(TokenVerifier(db, settings), forged)

    async def test_right_kid_wrong_key(self, db: Database, settings: Settings) -> None:
        kid = await ensure_signing_key(db)
        forged = compact(
            {"typ": "at+jwt", "alg": "EdDSA", "kid": kid},
            claims_for(settings),
            Ed25519PrivateKey.generate().sign,
        )
        assert "signature" in await rejected(TokenVerifier(db, settings), forged)

    async def test_missing_kid(self, db: Database, settings: Settings) -> None:
        _kid, key = await active_signing_key(db)
        assert isinstance(key.private_key, Ed25519PrivateKey)
        forged = compact(
            {"typ": "at+jwt", "alg": "EdDSA"}, claims_for(settings), key.private_key.sign
        )
        assert "kid" in await rejected(TokenVerifier(db, settings), forged)

    async def test_not_an_access_token(self, db: Database, settings: Settings) -> None:
        forged = await signed_by_active_key(db, claims_for(settings), typ="JWT")
        assert "typ" in await rejected(TokenVerifier(db, settings), forged)

    async def test_unsupported_header_field(self, db: Database, settings: Settings) -> None:
        forged = await signed_by_active_key(db, claims_for(settings), crit=["exp"])
        assert "header" in await rejected(TokenVerifier(db, settings), forged)

    async def test_wrong_audience(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MERCHANT)
        verifier = TokenVerifier(db, dataclasses.replace(settings, audience="another-api"))
        assert "audience" in await rejected(verifier, token)

    async def test_audience_list(self, db: Database, settings: Settings) -> None:
        claims = claims_for(settings, aud=["another-api", settings.audience])
        token = await signed_by_active_key(db, claims)
        assert await TokenVerifier(db, settings).verify(token) == MERCHANT

    async def test_wrong_issuer(self, db: Database, settings: Settings) -> None:
        token, _ = await issue_access_token(db, actor=MERCHANT)
        verifier = TokenVerifier(db, dataclasses.replace(settings, issuer="someone-else"))
        assert "issuer" in await rejected(verifier, token)

    @pytest.mark.parametrize("claim", ["exp", "jti", "sub", "client_id"])
    async def test_missing_claim(self, db: Database, settings: Settings, claim: str) -> None:
        token = await signed_by_active_key(db, claims_for(settings, **{claim: None}))
        assert f"missing required claims: {claim}" in await rejected(
            TokenVerifier(db, settings), token
        )

    @pytest.mark.parametrize("exp", ["tomorrow", True, 1e400, 10**400])
    async def test_exp_not_a_number(self, db: Database, settings: Settings, exp: Any) -> None:
        claims = claims_for(settings)
        payload = json.dumps(claims | {"exp": 0}).replace('"exp": 0', f'"exp": {json.dumps(exp)}')
        kid, key = await active_signing_key(db)
        assert isinstance(key.private_key, Ed25519PrivateKey)
        header = b64(json.dumps({"typ": "at+jwt", "alg": "EdDSA", "kid": kid}).encode())
        signing_input = f"{header}.{b64(payload.encode())}"
        token = f"{signing_input}.{b64(key.private_key.sign(signing_input.encode()))}"
        assert "NumericDate" in await rejected(TokenVerifier(db, settings), token)

    async def test_unknown_role(self, db: Database, settings: Settings) -> None:
        token = await signed_by_active_key(db, claims_for(settings, role="superuser"))
        assert "unknown role" in await rejected(TokenVerifier(db, settings), token)

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "garbage",
            "a.b.c",
            "a.b",
            "....",
            "é.é.é",
            "x" * 5000,
            b64(b"{}") + "." + b64(b"{}") + ".",
            b64(b"[1]") + ".e30.AAAA",
        ],
    )
    async def test_garbage(self, db: Database, settings: Settings, token: str) -> None:
        await rejected(TokenVerifier(db, settings), token)


class TestKeyRotation:
    async def test_old_tokens_verify_and_new_tokens_carry_the_new_kid(
        self, db: Database, settings: Settings
    ) -> None:
        old_kid = await ensure_signing_key(db)
        old_token, _ = await issue_access_token(db, actor=MERCHANT)
        clock = FakeMonotonic()
        verifier = TokenVerifier(db, settings, monotonic=clock)
        await verifier.verify(old_token)
        new_kid = await rotate_signing_key(db)
        new_token, _ = await issue_access_token(db, actor=MERCHANT)
        assert json.loads(unb64(new_token.split(".")[0]))["kid"] == new_kid != old_kid
        clock.now += 60
        for checker in (verifier, TokenVerifier(db, settings)):
            assert await checker.verify(old_token) == MERCHANT
            assert await checker.verify(new_token) == MERCHANT

    async def test_another_process_picks_up_the_new_kid_at_most_once_per_interval(
        self, db: Database, settings: Settings
    ) -> None:
        clock = FakeMonotonic()
        other_process = TokenVerifier(db, settings, monotonic=clock)
        await other_process.verify((await issue_access_token(db, actor=MERCHANT))[0])
        await rotate_signing_key(db)
        new_token, _ = await issue_access_token(db, actor=MERCHANT)

        clock.now += 1  # keys were loaded a second ago: no reload yet
        with db.count_statements() as counter:
            assert "unknown key" in await rejected(other_process, new_token)
        assert counter.count == 0

        clock.now += 1.5
        with db.count_statements() as counter:
            assert await other_process.verify(new_token) == MERCHANT
        assert counter.count == 1

    async def test_garbage_kids_cost_one_reload_per_interval(
        self, db: Database, settings: Settings
    ) -> None:
        await ensure_signing_key(db)
        clock = FakeMonotonic()
        verifier = TokenVerifier(db, settings, monotonic=clock)
        await verifier.load_keys()
        clock.now += 10
        with db.count_statements() as counter:
            for n in range(5):
                header = {"typ": "at+jwt", "alg": "EdDSA", "kid": f"junk-{n}"}
                forged = compact(header, claims_for(settings), Ed25519PrivateKey.generate().sign)
                await rejected(verifier, forged)
        assert counter.count == 1

    async def test_old_key_stops_verifying_at_verify_until(
        self, db: Database, settings: Settings
    ) -> None:
        await ensure_signing_key(db)
        old_token, _ = await issue_access_token(db, actor=MERCHANT)
        rotated_at = datetime.now(UTC)
        await rotate_signing_key(db, now=rotated_at)
        verifier = TokenVerifier(db, settings)
        await verifier.load_keys()
        after = rotated_at + timedelta(seconds=settings.access_token_ttl_seconds + 61)
        assert "no longer verifies" in await rejected(verifier, old_token, now=after)
