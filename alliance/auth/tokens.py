"""Access tokens: JWTs in the RFC 9068 profile, signed with EdDSA, verified on every request.

Header `{"typ": "at+jwt", "alg": "EdDSA", "kid": ...}`. Claims: iss, aud, sub, iat,
nbf, exp, jti, `role`, `client_id`, `merchant_id` (when bound), `scope` (when
any). Client tokens have sub `client:<client_id>`; member tokens have sub
`member:<member_id>`, `member_id`, `membership_id` and `act: {"sub": <client_id>}`
(RFC 8693 §4.1: the merchant app acting for the member).

`TokenVerifier` runs on every HTTP request, so it keeps the public keys in memory
and caches verified tokens by their exact string (an Ed25519 verification plus
parsing costs ~0.1 ms, a cache hit about a microsecond); expiry is re-checked on
every hit. Only successfully verified tokens enter the cache, so garbage cannot
evict good entries faster than valid tokens are presented.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import EdDSA, JWSAlgModel
from joserfc.jwk import OKPKey
from joserfc.jws import CompactSignature, JWSRegistry

from alliance.auth.actor import Actor
from alliance.auth.keys import ALGORITHM, active_signing_key, load_verification_keys
from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import InvalidInput, Unauthenticated

TOKEN_TYPE = "at+jwt"
_TOKEN_TYPES = frozenset({TOKEN_TYPE, "application/at+jwt"})  # RFC 9068 §4 allows both
CLOCK_SKEW_SECONDS = 30
"""Tolerated for `nbf` and `iat` (clocks of other machines); `exp` is strict."""
MAX_TOKEN_LENGTH = 4096
CACHE_SIZE = 10_000
KEY_RELOAD_INTERVAL_SECONDS = 2.0
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti", "role", "client_id")
_HEADER_FIELDS = frozenset({"typ", "alg", "kid"})


class _EdDSAOnly(JWSRegistry):
    """Signs and verifies with EdDSA and nothing else.

    joserfc warns (SecurityWarning) on every use of "EdDSA", which RFC 9864
    deprecates for the fully specified "Ed25519". We keep "EdDSA" because most
    JOSE libraries that will read our JWKS do not know "Ed25519" yet; moving is a
    change of `keys.ALGORITHM` plus this class.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if name != ALGORITHM:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return EdDSA


_REGISTRY = _EdDSAOnly(algorithms=[ALGORITHM])


async def issue_access_token(
    db: Database,
    *,
    actor: Actor,
    ttl_seconds: int | None = None,
    now: datetime | None = None,
) -> tuple[str, int]:
    """A signed access token for `actor`, and its lifetime in seconds (`expires_in`).

    The lifetime may not exceed `access_token_ttl_seconds`: after a rotation the
    old key verifies only that long, and a longer-lived token would die early.
    """
    settings = db.settings
    max_ttl = settings.access_token_ttl_seconds
    ttl = max_ttl if ttl_seconds is None else ttl_seconds
    if not 0 < ttl <= max_ttl:
        raise InvalidInput(f"ttlSeconds must be between 1 and {max_ttl}", field=("ttlSeconds",))
    issued_at = int((now or datetime.now(UTC)).timestamp())
    claims = access_token_claims(
        actor,
        issuer=settings.issuer,
        audience=settings.audience,
        issued_at=issued_at,
        ttl_seconds=ttl,
    )
    kid, key = await active_signing_key(db)
    header = {"typ": TOKEN_TYPE, "alg": ALGORITHM, "kid": kid}
    return jwt.encode(header, claims, key, registry=_REGISTRY), ttl


def access_token_claims(
    actor: Actor, *, issuer: str, audience: str, issued_at: int, ttl_seconds: int
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": actor.subject,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
        "role": actor.role.value,
        "client_id": actor.client_id,
    }
    if actor.merchant_id is not None:
        claims["merchant_id"] = actor.merchant_id
    if actor.scopes:
        claims["scope"] = " ".join(sorted(actor.scopes))
    if actor.role is Role.MEMBER:
        claims["member_id"] = actor.member_id
        claims["membership_id"] = actor.membership_id
        claims["act"] = {"sub": actor.client_id}
    # Whatever we sign must read back as the same actor.
    try:
        consistent = actor_from_claims(claims) == actor
    except Unauthenticated as error:
        raise InvalidInput(f"cannot issue a token for this actor: {error.message}") from None
    if not consistent:
        raise InvalidInput("cannot issue a token for this actor: its subject, role and ids differ")
    return claims


def actor_from_claims(claims: Mapping[str, Any]) -> Actor:
    """The actor a verified token speaks for; Unauthenticated if the claims are inconsistent."""
    role_value = claims.get("role")
    try:
        role = Role(role_value) if isinstance(role_value, str) else None
    except ValueError:
        role = None
    if role is None:
        raise Unauthenticated("token has an unknown role")
    subject = _string_claim(claims, "sub")
    client_id = _string_claim(claims, "client_id")
    merchant_id = _id_claim(claims, "merchant_id", required=False)
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated("token claim scope must be a string")
    scopes = frozenset(scope.split())

    if role is Role.MEMBER:
        member_id = _id_claim(claims, "member_id")
        membership_id = _id_claim(claims, "membership_id")
        act = claims.get("act")
        if not isinstance(act, dict) or act.get("sub") != client_id:
            raise Unauthenticated("member token must name its client in act.sub")
        if subject != f"member:{member_id}":
            raise Unauthenticated("member token subject does not match member_id")
        if merchant_id is None:
            raise Unauthenticated("member token is not bound to a merchant")
        return Actor(
            role,
            subject,
            client_id,
            merchant_id=merchant_id,
            member_id=member_id,
            membership_id=membership_id,
            scopes=scopes,
        )

    if subject != f"client:{client_id}":
        raise Unauthenticated("client token subject does not match client_id")
    if "member_id" in claims or "membership_id" in claims or "act" in claims:
        raise Unauthenticated(f"a {role.value} token cannot carry member claims")
    if role is Role.MERCHANT and merchant_id is None:
        raise Unauthenticated("merchant token is not bound to a merchant")
    if role in (Role.OPERATOR, Role.AUDITOR) and merchant_id is not None:
        raise Unauthenticated(f"{role.value} token cannot be bound to a merchant")
    return Actor(role, subject, client_id, merchant_id=merchant_id, scopes=scopes)


def check_claims(claims: Mapping[str, Any], *, issuer: str, audience: str, now: float) -> float:
    """Registered-claim checks (RFC 7519 §4.1); returns `exp`."""
    missing = [name for name in REQUIRED_CLAIMS if claims.get(name) is None]
    if missing:
        raise Unauthenticated(f"token is missing required claims: {', '.join(missing)}")
    if claims["iss"] != issuer:
        raise Unauthenticated("token issuer is not accepted")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if audience not in audiences:
        raise Unauthenticated("token audience is not accepted")
    expires_at = _time_claim(claims, "exp")
    if now >= expires_at:
        raise Unauthenticated("token has expired")
    if _time_claim(claims, "iat") > now + CLOCK_SKEW_SECONDS or (
        "nbf" in claims and _time_claim(claims, "nbf") > now + CLOCK_SKEW_SECONDS
    ):
        raise Unauthenticated("token is not yet valid")
    return expires_at


class TokenVerifier:
    """Verifies access tokens for one process: create one at startup and share it."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        cache_size: int = CACHE_SIZE,
        reload_interval_seconds: float = KEY_RELOAD_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        assert cache_size > 0
        self._db = db
        self._issuer = settings.issuer
        self._audience = settings.audience
        self._cache: dict[str, tuple[Actor, float]] = {}
        self._cache_size = cache_size
        self._keys: dict[str, tuple[OKPKey, float | None]] = {}
        """kid -> (public key, the time it stops verifying)."""
        self._keys_loaded_at: float | None = None
        self._reload_interval = reload_interval_seconds
        self._monotonic = monotonic
        self._reload_lock = asyncio.Lock()

    async def verify(self, token: str, *, now: datetime | None = None) -> Actor:
        timestamp = time.time() if now is None else now.timestamp()
        cached = self._cache.get(token)
        if cached is not None:
            actor, expires_at = cached
            if timestamp < expires_at:
                return actor
            del self._cache[token]
            raise Unauthenticated("token has expired")
        actor, expires_at = await self._verify_uncached(token, timestamp)
        if len(self._cache) >= self._cache_size:
            # Drop the oldest entry (dicts keep insertion order): cheap, and old
            # entries are the ones closest to expiry.
            del self._cache[next(iter(self._cache))]
        self._cache[token] = (actor, expires_at)
        return actor

    async def load_keys(self) -> None:
        """Read the verifying keys from the database (at startup, or to pick up a rotation)."""
        keys = await load_verification_keys(self._db)
        self._keys = {
            kid: (entry.key, entry.verify_until.timestamp() if entry.verify_until else None)
            for kid, entry in keys.items()
        }
        self._keys_loaded_at = self._monotonic()

    async def _verify_uncached(self, token: str, now: float) -> tuple[Actor, float]:
        signed = _parse(token)
        header = signed.headers()
        alg = header.get("alg")
        # The allow-list comes before any key lookup: no "none", no HS256 keyed
        # with our public key, no RS256 - whatever else the header claims.
        if alg != ALGORITHM:
            raise Unauthenticated(
                f"token algorithm {_shown(alg)} is not accepted; only {ALGORITHM} is"
            )
        if not header.keys() <= _HEADER_FIELDS:
            raise Unauthenticated("token header has unsupported fields")
        if header.get("typ") not in _TOKEN_TYPES:
            raise Unauthenticated(f"token is not an access token (typ must be {TOKEN_TYPE})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid)")
        key = await self._verification_key(kid, now)
        try:
            valid = jws.validate_compact(signed, key, registry=_REGISTRY)
        except JoseError:
            valid = False
        if not valid:
            raise Unauthenticated("token signature is invalid")
        try:
            claims = json.loads(signed.payload or b"")
        except ValueError:
            raise Unauthenticated("token payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("token payload is not a JSON object")
        expires_at = check_claims(claims, issuer=self._issuer, audience=self._audience, now=now)
        return actor_from_claims(claims), expires_at

    async def _verification_key(self, kid: str, now: float) -> OKPKey:
        entry = self._keys.get(kid)
        if entry is None:
            await self._reload_keys()
            entry = self._keys.get(kid)
        if entry is None:
            raise Unauthenticated("token is signed by an unknown key (kid)")
        key, verify_until = entry
        if verify_until is not None and now >= verify_until:
            raise Unauthenticated("token is signed by a key that no longer verifies")
        return key

    async def _reload_keys(self) -> None:
        # An unknown kid is usually a rotation done by another process, but it can
        # be garbage sent on purpose: reload at most once per interval.
        seen = self._keys_loaded_at
        async with self._reload_lock:
            if self._keys_loaded_at != seen:
                return  # reloaded by another request while this one waited
            if seen is not None and self._monotonic() - seen < self._reload_interval:
                return
            await self.load_keys()


def _parse(token: str) -> CompactSignature:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise Unauthenticated("malformed token")
    try:
        signed = jws.extract_compact(token.encode("ascii"), registry=_REGISTRY)
    except (JoseError, ValueError):  # UnicodeError is a ValueError
        raise Unauthenticated("malformed token") from None
    if not isinstance(signed.headers(), dict):
        raise Unauthenticated("malformed token")
    return signed


def _shown(value: object) -> str:
    """An attacker-controlled header value, made safe for a message."""
    if isinstance(value, str) and len(value) <= 16 and value.isprintable():
        return repr(value)
    return "(missing or invalid)"


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"token claim {name} must be a non-empty string")
    return value


def _id_claim(claims: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Unauthenticated(f"token claim {name} must be a positive integer")
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    # bool is an int; NaN compares false with everything (it would never expire);
    # float() of a huge int overflows.
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            timestamp = float(value)
        except OverflowError:
            pass
        else:
            if math.isfinite(timestamp):
                return timestamp
    raise Unauthenticated(f"token claim {name} must be a NumericDate")
