"""The alliance secret key, and sealing small secrets (signing keys) with it at rest.

The key is 32 bytes, configured as base64 in `ALLIANCE_SECRET_KEY`. Outside
production mode a missing key is generated once and kept in
`<data_dir>/secret.key` (mode 0600), so a fresh machine works and restarts keep
reading what they sealed; production refuses to start without an explicit key,
because a key generated on one replica would be unknown to the others.

Sealed format: `version (1) | key id (4) | nonce (12) | AES-256-GCM ciphertext+tag`.
The key id is derived from the key, so a future keyring can pick the right key
after a rotation, and a wrong key is reported as such rather than as corruption.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alliance.config import Settings

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_BYTES = 4
SECRET_KEY_FILE = "secret.key"
_VERSION = b"\x01"
_HEADER_BYTES = len(_VERSION) + KEY_ID_BYTES


class SecretKeyError(RuntimeError):
    """The secret key is missing, malformed, or not the one a value was sealed with."""


def load_secret_key(settings: Settings) -> bytes:
    """The configured key; outside production, a generated one persisted in the data dir."""
    if settings.secret_key:
        return _decode_key(settings.secret_key, source="ALLIANCE_SECRET_KEY")
    if settings.production:
        raise SecretKeyError(
            "ALLIANCE_SECRET_KEY is required in production mode: set it to the base64 of 32 "
            "random bytes (e.g. `python -c 'import secrets, base64; "
            "print(base64.b64encode(secrets.token_bytes(32)).decode())'`), "
            "the same value on every instance"
        )
    return _load_or_create_key_file(Path(settings.data_dir) / SECRET_KEY_FILE)


def key_id(key: bytes) -> bytes:
    """A short public tag of the key (an HMAC, so it reveals nothing about the key)."""
    return hmac.digest(key, b"points-alliance/sealing/key-id", "sha256")[:KEY_ID_BYTES]


def seal(key: bytes, plaintext: bytes, *, associated_data: bytes = b"") -> bytes:
    """Encrypt and authenticate; `associated_data` binds the result to its context (e.g. a kid)."""
    _check_key_length(key)
    header = _VERSION + key_id(key)
    nonce = secrets.token_bytes(NONCE_BYTES)  # random 96-bit nonces: fine for few seals per key
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + associated_data)


def unseal(key: bytes, sealed: bytes, *, associated_data: bytes = b"") -> bytes:
    _check_key_length(key)
    if len(sealed) < _HEADER_BYTES + NONCE_BYTES + 16 or sealed[:1] != _VERSION:
        raise SecretKeyError("sealed value is malformed or of an unknown version")
    header = sealed[:_HEADER_BYTES]
    if not hmac.compare_digest(header[1:], key_id(key)):
        raise SecretKeyError(
            f"value was sealed with secret key {header[1:].hex()}, "
            f"but the configured secret key is {key_id(key).hex()}"
        )
    nonce = sealed[_HEADER_BYTES : _HEADER_BYTES + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(
            nonce, sealed[_HEADER_BYTES + NONCE_BYTES :], header + associated_data
        )
    except InvalidTag:
        raise SecretKeyError("sealed value failed authentication (corrupted or moved)") from None


def _check_key_length(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"secret key must be {KEY_BYTES} bytes, got {len(key)}")


def _decode_key(encoded: str, *, source: str) -> bytes:
    text = encoded.strip().replace("-", "+").replace("_", "/")  # either alphabet
    text += "=" * (-len(text) % 4)  # and with or without padding
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{source} must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def _load_or_create_key_file(path: Path) -> bytes:
    try:
        return _decode_key(path.read_text(encoding="ascii"), source=str(path))
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    # Write a private temporary file, then link it into place: the link is atomic
    # and fails if another process got there first, in which case its key wins.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(encoded + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return _decode_key(path.read_text(encoding="ascii"), source=str(path))
