"""Relay connections over the domain's keyset pages: opaque cursors, `first` ≤ 100."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from strawberry import relay

from alliance.db.paging import MAX_PAGE_SIZE, Page
from alliance.errors import InvalidInput

DEFAULT_PAGE_SIZE = 20
_PREFIX = "k1:"

N = TypeVar("N")
R = TypeVar("R")
C = TypeVar("C", bound=relay.Connection[Any])


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def encode_cursor(key: int) -> str:
    # base64.urlsafe_b64encode, without its wrappers' cost: a page encodes one per edge.
    encoded = binascii.b2a_base64(f"{_PREFIX}{key}".encode(), newline=False)
    return encoded.translate(_URL_SAFE).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode()).decode()
        if not raw.startswith(_PREFIX):
            raise ValueError(raw)
        key = int(raw.removeprefix(_PREFIX))
        if key < 0:
            raise ValueError(raw)
        return key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("after is not a cursor this API issued", field=("after",)) from None


def check_first(first: int) -> int:
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field=("first",))
    return first


def build_connection(
    connection: type[C],
    page: Page[R],
    node: Callable[[R], Any],
    key: Callable[[R], int],
    *,
    after: int | None,
) -> C:
    items: Sequence[R] = page.items
    edges = [relay.Edge(cursor=encode_cursor(key(item)), node=node(item)) for item in items]
    return connection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
