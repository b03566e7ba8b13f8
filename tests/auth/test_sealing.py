import base64
import os
import stat
from pathlib import Path

import pytest

from alliance.auth.sealing import (
    SECRET_KEY_FILE,
    SecretKeyError,
    key_id,
    load_secret_key,
    seal,
    unseal,
)
from alliance.config import Settings

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


class TestSeal:
    def test_round_trip(self) -> None:
        sealed = seal(KEY, b"private key", associated_data=b"kid-1")
        assert b"private key" not in sealed
        assert unseal(KEY, sealed, associated_data=b"kid-1") == b"private key"

    def test_each_seal_uses_a_fresh_nonce(self) -> None:
        assert seal(KEY, b"same") != seal(KEY, b"same")

    def test_carries_the_key_id(self) -> None:
        sealed = seal(KEY, b"x")
        assert sealed[1:5] == key_id(KEY)
        assert key_id(KEY) != key_id(OTHER_KEY)

    def test_wrong_key_is_named_as_such(self) -> None:
        with pytest.raises(SecretKeyError, match="sealed with secret key"):
            unseal(OTHER_KEY, seal(KEY, b"x"))

    def test_other_associated_data_is_refused(self) -> None:
        with pytest.raises(SecretKeyError, match="failed authentication"):
            unseal(KEY, seal(KEY, b"x", associated_data=b"kid-1"), associated_data=b"kid-2")

    def test_tampered_ciphertext_is_refused(self) -> None:
        sealed = bytearray(seal(KEY, b"private key"))
        sealed[-1] ^= 1
        with pytest.raises(SecretKeyError, match="failed authentication"):
            unseal(KEY, bytes(sealed))

    @pytest.mark.parametrize("sealed", [b"", b"\x01abc", b"\x02" + bytes(40)])
    def test_malformed_is_refused(self, sealed: bytes) -> None:
        with pytest.raises(SecretKeyError, match="malformed"):
            unseal(KEY, sealed)


class TestLoadSecretKey:
    @pytest.mark.parametrize(
        "encoded",
        [
            base64.b64encode(bytes([250] * 32)).decode(),
            base64.urlsafe_b64encode(bytes([250] * 32)).decode(),  # another alphabet
            base64.urlsafe_b64encode(bytes([250] * 32)).decode().rstrip("="),
        ],
    )
    def test_configured_key(self, tmp_path: Path, encoded: str) -> None:
        key = bytes([250] * 32)
        assert load_secret_key(Settings(data_dir=tmp_path, secret_key=encoded)) == key
        assert not (tmp_path / SECRET_KEY_FILE).exists()

    @pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
    def test_malformed_configured_key(self, tmp_path: Path, value: str) -> None:
        with pytest.raises(SecretKeyError, match="ALLIANCE_SECRET_KEY"):
            load_secret_key(Settings(data_dir=tmp_path, secret_key=value))

    def test_generated_once_persisted_private_and_reused(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path / "data", secret_key=None)
        key = load_secret_key(settings)
        path = tmp_path / "data" / SECRET_KEY_FILE
        assert len(key) == 32
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert load_secret_key(settings) == key
        assert [p.name for p in path.parent.iterdir()] == [SECRET_KEY_FILE]  # no temp left

    def test_production_requires_a_key(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, secret_key=None, production=True)
        with pytest.raises(SecretKeyError, match="required in production"):
            load_secret_key(settings)
        assert not (tmp_path / SECRET_KEY_FILE).exists()
