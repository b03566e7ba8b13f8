"""Phone numbers and e-mail addresses: normalisation, keyed matching digests, sealing.

Pure functions and the identity keyring; no database. An identifier is normalised first
(phone to E.164, e-mail trimmed and lower-cased), then

- matched by `digest`: HMAC-SHA256 under the keyring's matching key, over
  `kind:normalised` (so equal identifiers always meet, and a phone never meets an e-mail);
- shown from `sealed`: AES-256-GCM under the keyring's sealing key, with the kind as
  associated data (a ciphertext moved to another kind fails to open).

Keys come from `ALLIANCE_IDENTITY_KEYS` (`kid:base64key,kid:base64key`, the first one
current); without it, one key `k0` derived from the alliance secret key by HKDF. Every
digest and ciphertext stores its key id: after a rotation, lookups try every key's
digest, and `sealed` values open with the key they name.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from alliance.auth.sealing import load_secret_key
from alliance.config import Settings
from alliance.errors import InvalidInput
from alliance.identity.models import IdentifierKind

DEFAULT_COUNTRY_CODE = "86"
"""Numbers written without a country code are Chinese mobile numbers (the alliance's home)."""
NONCE_BYTES = 12

_EMAIL = re.compile(r"^[^@\s]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9-]{1,63})+$")
_PHONE_NOISE = re.compile(r"[\s\-().\u00a0\u3000]")


def normalise(kind: IdentifierKind, raw: str) -> str:
    """The canonical form that digests are computed over; InvalidInput when malformed."""
    if kind is IdentifierKind.PHONE:
        return normalise_phone(raw)
    return normalise_email(raw)


def normalise_phone(raw: str) -> str:
    """E.164: `+<country><number>`. Spaces, dashes, dots and brackets are ignored; `00`
    stands for `+`; a bare 11-digit number starting with 1 is Chinese (+86)."""
    text = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", raw))
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        digits = text[1:]
    elif len(text) == 11 and text.startswith("1"):
        digits = DEFAULT_COUNTRY_CODE + text
    else:
        digits = ""
    if not digits.isascii() or not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise InvalidInput("phone must be a number in international form", field=("phone",))
    if digits[0] == "0":
        raise InvalidInput("phone must start with a country code", field=("phone",))
    return "+" + digits


def normalise_email(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(text) > 254 or not text.isascii() or not _EMAIL.match(text):
        raise InvalidInput("email is not a valid address", field=("email",))
    return text


def mask(kind: IdentifierKind, normalised: str) -> str:
    """What may be shown to a merchant or logged: `+86 138****5678`, `l***@example.com`."""
    if kind is IdentifierKind.PHONE:
        return normalised[:6] + "****" + normalised[-4:]
    local, _, domain = normalised.partition("@")
    return local[:1] + "***@" + domain


@dataclass(frozen=True, slots=True)
class IdentityKey:
    key_id: str
    matching: bytes
    sealing: bytes


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[IdentityKey, ...]
    """The first key is current: it makes new digests and ciphertexts."""

    @property
    def current(self) -> IdentityKey:
        return self.keys[0]

    def key(self, key_id: str) -> IdentityKey:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        raise InvalidInput(f"identity key {key_id} is not configured")

    def digest(
        self, kind: IdentifierKind, normalised: str, key: IdentityKey | None = None
    ) -> bytes:
        key = key or self.current
        return hmac.digest(key.matching, f"{kind.value}:{normalised}".encode(), "sha256")

    def digests(self, kind: IdentifierKind, normalised: str) -> list[bytes]:
        """Under every configured key: what a lookup matches, across rotations."""
        return [self.digest(kind, normalised, key) for key in self.keys]

    def seal(self, kind: IdentifierKind, normalised: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.current.sealing).encrypt(
            nonce, normalised.encode(), kind.value.encode()
        )
        return nonce + sealed

    def open(self, kind: IdentifierKind, key_id: str, sealed: bytes) -> str:
        key = self.key(key_id)
        try:
            return (
                AESGCM(key.sealing)
                .decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], kind.value.encode())
                .decode()
            )
        except InvalidTag:
            raise InvalidInput("identifier ciphertext failed authentication") from None

    def code_digest(self, salt: bytes, code: str, key: IdentityKey | None = None) -> bytes:
        """A verification code's digest: keyed, so a copy of the table cannot be brute-forced."""
        key = key or self.current
        return hmac.digest(key.matching, b"code:" + salt + code.encode(), "sha256")

    def seal_message(self, message: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.current.sealing).encrypt(nonce, message, context)

    def open_message(self, key_id: str, sealed: bytes, context: bytes) -> bytes:
        key = self.key(key_id)
        return AESGCM(key.sealing).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)


def keyring(settings: Settings) -> Keyring:
    return _keyring(settings.identity_keys, load_secret_key(settings))


@lru_cache(maxsize=8)
def _keyring(configured: str | None, secret_key: bytes) -> Keyring:
    if not configured:
        return Keyring((_derive("k0", _hkdf(secret_key, b"points-alliance/identity/k0")),))
    keys = []
    for entry in configured.split(","):
        key_id, _, encoded = entry.strip().partition(":")
        try:
            material = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"ALLIANCE_IDENTITY_KEYS: key {key_id!r} is not base64") from None
        if not key_id or len(material) != 32:
            raise ValueError("ALLIANCE_IDENTITY_KEYS: entries are kid:base64(32 bytes)")
        keys.append(_derive(key_id, material))
    return Keyring(tuple(keys))


def _derive(key_id: str, material: bytes) -> IdentityKey:
    # Separate keys for matching and sealing: one never serves the other's purpose.
    return IdentityKey(
        key_id,
        _hkdf(material, b"points-alliance/identity/match"),
        _hkdf(material, b"points-alliance/identity/seal"),
    )


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
