"""Identifier matching is stable under normalisation: one person, one digest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance.config import Settings
from alliance.errors import InvalidInput
from alliance.identity.identifiers import Keyring, keyring, mask, normalise
from alliance.identity.models import IdentifierKind
from tests.conftest import TEST_SECRET_KEY

PHONE, EMAIL = IdentifierKind.PHONE, IdentifierKind.EMAIL
KEYS: Keyring = keyring(Settings(secret_key=TEST_SECRET_KEY))

cn_mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
separators = st.sampled_from(["", " ", "-", ".", "\u3000", " - "])
local_parts = st.from_regex(r"[a-z0-9][a-z0-9._+]{0,20}", fullmatch=True)
domains = st.from_regex(r"[a-z0-9]{1,10}\.(com|cn|net|org)", fullmatch=True)


def _spaced(digits: str, separator: str, cut: int) -> str:
    """The digits with a separator every `cut` characters, as people write them."""
    return separator.join(digits[i : i + cut] for i in range(0, len(digits), cut))


def _digest(kind: IdentifierKind, raw: str) -> bytes:
    return KEYS.digest(kind, normalise(kind, raw))


@given(cn_mobiles, separators, st.integers(3, 5), st.sampled_from(["", "+86", "0086", "+86 "]))
def test_phone_digest_stable_under_spelling(
    mobile: str, separator: str, cut: int, prefix: str
) -> None:
    written = prefix + (separator if prefix else "") + _spaced(mobile, separator, cut)
    assert _digest(PHONE, written) == _digest(PHONE, "+86" + mobile)
    assert normalise(PHONE, written) == "+86" + mobile


@given(local_parts, domains, st.data())
def test_email_digest_stable_under_case_and_whitespace(
    local: str, domain: str, data: st.DataObject
) -> None:
    address = f"{local}@{domain}"
    flips = data.draw(st.lists(st.booleans(), min_size=len(address), max_size=len(address)))
    shouted = "".join(c.upper() if f else c for c, f in zip(address, flips, strict=True))
    padding = data.draw(st.sampled_from(["", " ", "\t", "  \n"]))
    assert _digest(EMAIL, padding + shouted + padding) == _digest(EMAIL, address)


@given(cn_mobiles, cn_mobiles)
def test_different_numbers_never_share_a_digest(first: str, second: str) -> None:
    assert (_digest(PHONE, first) == _digest(PHONE, second)) == (first == second)


def test_a_phone_and_an_email_never_meet() -> None:
    # Same normalised text under two kinds: the kind is part of the digest.
    assert KEYS.digest(PHONE, "x") != KEYS.digest(EMAIL, "x")


def test_digests_depend_on_the_key() -> None:
    other = keyring(Settings(secret_key="b3RoZXItc2VjcmV0LWtleS1vdGhlci1zZWNyZXQta2U="))
    assert other.digest(PHONE, "+8613800138000") != KEYS.digest(PHONE, "+8613800138000")


def test_rotation_matches_old_digests_and_opens_old_ciphertexts() -> None:
    old = keyring(Settings(identity_keys="k1:" + TEST_SECRET_KEY))
    rotated = keyring(
        Settings(identity_keys="k2:b3RoZXItc2VjcmV0LWtleS1vdGhlci1zZWNyZXQta2U=,k1:"
                 + TEST_SECRET_KEY)
    )  # fmt: skip
    sealed = old.seal(PHONE, "+8613800138000")
    assert old.digest(PHONE, "+8613800138000") in rotated.digests(PHONE, "+8613800138000")
    assert rotated.open(PHONE, "k1", sealed) == "+8613800138000"
    assert rotated.current.key_id == "k2"


def test_sealed_identifier_is_bound_to_its_kind() -> None:
    sealed = KEYS.seal(PHONE, "+8613800138000")
    with pytest.raises(InvalidInput):
        KEYS.open(EMAIL, KEYS.current.key_id, sealed)


@pytest.mark.parametrize(
    "raw", ["", "12345", "+0 123 4567 890", "phone", "+86 138 0013 800a", "+" + "1" * 16]
)
def test_malformed_phones_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalise(PHONE, raw)


@pytest.mark.parametrize("raw", ["", "a@", "@b.com", "a b@c.com", "a@b", "李@例子.中国"])
def test_malformed_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        normalise(EMAIL, raw)


def test_masks_show_little() -> None:
    assert mask(PHONE, "+8613800138000") == "+86138****8000"
    assert mask(EMAIL, "li.na@example.com") == "l***@example.com"
