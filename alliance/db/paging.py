"""Keyset pagination: pages of a list, and one page per parent in one statement.

Statements are SQLAlchemy selects compiled once (see `compiled.py`); the page
size travels as the `limit` parameter and the parents as `parent_ids`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, ColumnElement, Integer, Select, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY

from alliance.db.engine import Database

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


AFTER = bindparam("after", type_=BigInteger)
LIMIT = bindparam("limit", type_=Integer)
"""Typed, so that the SQL casts it and concurrent reads can share the statement
(shared_reads.py)."""


def past_cursor(column: Any, present: bool, *, descending: bool = False) -> Any:
    """Keyset condition: rows past the cursor; TRUE in the variant without one."""
    if not present:
        return true()
    return column < AFTER if descending else column > AFTER


def ids_param(name: str = "ids") -> Any:
    return bindparam(name, type_=ARRAY(BigInteger))


def paged(stmt: Select[Any]) -> Select[Any]:
    return stmt.limit(LIMIT)


def paged_by_parent(page_for_parent: Callable[[ColumnElement[int]], Select[Any]]) -> Select[Any]:
    """One page per parent, all in one statement (a LATERAL join over the parent ids).

    `page_for_parent(parent_id_column)` builds the ordered, filtered select for one
    parent; PostgreSQL runs it once per parent, each on its index.
    """
    parents = func.unnest(ids_param("parent_ids")).table_valued("id").render_derived(name="parent")
    inner = paged(page_for_parent(parents.c.id)).lateral("page")
    return select(parents.c.id.label("parent_id"), inner).select_from(parents.join(inner, true()))


async def fetch_page(
    db: Database,
    query: tuple[str, Mapping[str, Any]],
    first: int,
    make: Callable[[Any], T],
) -> Page[T]:
    sql, params = query
    rows = await db.read(sql, {**params, "limit": first + 1})
    return Page.from_rows(rows, first, make)


async def fetch_pages_by_parent(
    db: Database,
    query: tuple[str, Mapping[str, Any]],
    parent_ids: Sequence[int],
    first: int,
    make: Callable[[Any], T],
) -> dict[int, Page[T]]:
    sql, params = query
    rows = await db.read(sql, {**params, "parent_ids": list(parent_ids), "limit": first + 1})
    grouped: dict[int, list[Any]] = {parent_id: [] for parent_id in parent_ids}
    for row in rows:
        grouped[row[0]].append(row[1:])
    return {parent_id: Page.from_rows(grouped[parent_id], first, make) for parent_id in parent_ids}
