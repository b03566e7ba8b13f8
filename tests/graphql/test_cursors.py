"""Cursors: URL-safe base64 of `k1:<key>`, unpadded; anything else is refused."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance.errors import InvalidInput
from schema.pagination import decode_cursor, encode_cursor


@given(st.integers(0, 2**63 - 1))
def test_a_cursor_is_its_key_in_url_safe_base64(key: int) -> None:
    cursor = encode_cursor(key)
    assert cursor == base64.urlsafe_b64encode(f"k1:{key}".encode()).decode().rstrip("=")
    assert decode_cursor(cursor) == key


@pytest.mark.parametrize("cursor", ["", "k1:1", "!!!", encode_cursor(1)[:-1] + "*", "azE6LTE"])
def test_what_is_not_a_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(cursor)
