"""Reads of records by id whose statement is known before they run.

A domain read such as `memberships_by_id(db, actor, ids)` is one statement and a row
mapping. Written as a `ByIds`, it is still awaited as that function, and a GraphQL
loader can also send its statement straight from its batch (`Database.submit`) and hand
the records to the waiting loads from the read's callback: no task of its own, and no
coroutines between the rows and the loads (~8 µs of a request that loads one record).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from alliance.auth.actor import Actor
    from alliance.db.engine import Database

V = TypeVar("V")
Row = tuple[Any, ...]
Statement = tuple[str, Mapping[str, Any]]


class ByIds(Generic[V]):
    """Records by id, as the actor may see them: `statement(actor, ids)` reads rows whose
    first column is the id, `record(row)` makes each one's record."""

    __slots__ = ("record", "statement")

    def __init__(
        self,
        statement: Callable[[Actor, Sequence[int]], Statement],
        record: Callable[[Row], V],
    ) -> None:
        self.statement = statement
        self.record = record

    def found(self, rows: list[Row]) -> dict[int, V]:
        record = self.record
        return {row[0]: record(row) for row in rows}

    async def __call__(self, db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, V]:
        return self.found(await db.read(*self.statement(actor, ids)))
