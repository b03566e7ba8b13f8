"""Keyset pagination: pages of a list, and one page per parent in one statement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, ColumnElement, Select, func, literal, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_next_page: bool

    @classmethod
    def from_rows(cls, rows: Sequence[Any], first: int, make: Callable[[Any], T]) -> Page[T]:
        """`rows` were fetched with LIMIT first + 1: the extra row only says there is more."""
        return cls([make(row) for row in rows[:first]], len(rows) > first)


EMPTY: Page[Any] = Page([], False)


async def fetch_page(
    conn: AsyncConnection, stmt: Select[Any], first: int, make: Callable[[Any], T]
) -> Page[T]:
    rows = (await conn.execute(stmt.limit(first + 1))).all()
    return Page.from_rows(rows, first, make)


async def fetch_pages_by_parent(
    conn: AsyncConnection,
    parent_ids: Sequence[int],
    page_for_parent: Callable[[ColumnElement[int]], Select[Any]],
    first: int,
    make: Callable[[Any], T],
) -> dict[int, Page[T]]:
    """One page per parent, all in one statement (a LATERAL join over the parent ids).

    `page_for_parent(parent_id_column)` builds the ordered, filtered select for one
    parent; it runs once per parent inside PostgreSQL, each using its index.
    """
    parents = (
        func.unnest(literal(list(parent_ids), ARRAY(BigInteger)))
        .table_valued("id")
        .render_derived(name="parent")
    )
    inner = page_for_parent(parents.c.id).limit(first + 1).lateral("page")
    stmt = select(parents.c.id.label("parent_id"), inner).select_from(parents.join(inner, true()))
    rows = (await conn.execute(stmt)).all()
    grouped: dict[int, list[Any]] = {parent_id: [] for parent_id in parent_ids}
    for row in rows:
        grouped[row.parent_id].append(row)
    return {parent_id: Page.from_rows(grouped[parent_id], first, make) for parent_id in parent_ids}
