"""Reads that share a round trip: the same statement, asked for by concurrent requests,
sent to PostgreSQL once.

A read costs the worker ~110 µs of CPU in psycopg and the event loop, whatever it
reads, and PostgreSQL a statement's overhead; under load, many requests of a worker
ask the same statement at once with different parameters (each member her own
balance). `SharedReads` sends one statement for all of them:

    SELECT k.n, q.* FROM unnest(<each request's parameters, as text arrays>)
        WITH ORDINALITY AS k(…, n)
    CROSS JOIN LATERAL (SELECT s.*, row_number() OVER () FROM (<the statement>) s) q

The statement runs once per request (LATERAL), with that request's parameters in
place of its placeholders, so each request gets exactly the rows it would have got
alone, in the same order, and no request's visibility rule applies to another's
rows. All of them read one snapshot, taken after every one of them arrived: each
read still happens between its request and its answer.

A statement takes part only when every placeholder carries a cast (`%(x)s::BIGINT`,
as SQLAlchemy's psycopg dialect renders typed parameters), so that text can stand in
for any value; a request whose values cannot be written as text reads alone. If the
shared statement fails, each request is read alone, and gets its own answer or error.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

Row = tuple[Any, ...]
Fetch = Callable[[str, Mapping[str, Any] | None], Coroutine[Any, Any, list[Row]]]

MAX_BATCH = 64
"""Requests per shared statement; more wait for the next one."""

MAX_SHAPES = 1024
"""Statements whose shared form is kept."""

IN_FLIGHT = 1
"""Shared statements of one SQL text on their way at once. While one is, the reads
that arrive gather for the next: the busier the worker, the bigger the batch."""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_KEY = "shared_read_key"


class Shape:
    """A statement rewritten to run once per request."""

    __slots__ = ("names", "sql")

    def __init__(self, names: tuple[str, ...], sql: str) -> None:
        self.names = names
        self.sql = sql


def shape_of(sql: str) -> Shape | None:
    """The shared form of `sql`, or None when a placeholder has no cast."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(sql):
        if not sql.startswith("::", match.end()):
            return None
        if match.group(1) not in names:
            names.append(match.group(1))
    if not names:
        return None  # nothing differs between requests: nothing to gain over one read each
    columns = {name: f"p{index}" for index, name in enumerate(names)}
    inner = _PLACEHOLDER.sub(lambda m: f"{_KEY}.{columns[m.group(1)]}", sql)
    # Each array travels as one text literal (`array_literal`): psycopg's dumping of a
    # list costs more than the rest of the statement's sending.
    arrays = ", ".join(f"%({column})s::TEXT[]" for column in columns.values())
    shared = (
        f"SELECT {_KEY}.n, shared_read.* FROM unnest({arrays})"
        f" WITH ORDINALITY AS {_KEY}({', '.join(columns.values())}, n)"
        " CROSS JOIN LATERAL (SELECT shared_row.*, row_number() OVER () AS shared_read_row"
        f" FROM ({inner}) AS shared_row) AS shared_read"
        f" ORDER BY {_KEY}.n, shared_read.shared_read_row"
    )
    return Shape(tuple(names), shared)


def as_text(value: Any) -> str | None:
    """`value` as PostgreSQL reads it from text; raises TypeError for what cannot be.
    Exact types only: a subclass (an enum, say) may be dumped its own way by psycopg."""
    kind = type(value)
    if value is None or kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is Decimal:
        return str(value)
    if kind is datetime and value.tzinfo is not None:
        return value.isoformat()
    if (kind is list or kind is tuple) and all(type(item) is int for item in value):
        return "{" + ",".join(map(str, value)) + "}"
    raise TypeError(f"no text form for {kind.__name__}")


def array_literal(values: list[str | None]) -> str:
    """A TEXT[] literal of `values`: each element quoted, its quotes and backslashes
    escaped, None as NULL."""
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value: str | None) -> str:
    if value is None:
        return "NULL"
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


class _Batch:
    __slots__ = ("reads", "shape")

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.reads: list[tuple[list[str | None], Mapping[str, Any], asyncio.Future[list[Row]]]] = []


class SharedReads:
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._shapes: dict[str, Shape | None] = {}
        self._waiting: dict[str, _Batch] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        joined = self._join(sql, params)
        if joined is None:
            return await self._fetch(sql, params)
        return await joined

    def submit(self, sql: str, params: Mapping[str, Any]) -> asyncio.Future[list[Row]]:
        """`read` as a future, for a caller that waits by callback (the loaders): a
        statement that cannot be shared is read by a task of its own."""
        joined = self._join(sql, params)
        if joined is None:
            return asyncio.get_running_loop().create_task(self._fetch(sql, params))
        return joined

    def _join(self, sql: str, params: Mapping[str, Any]) -> asyncio.Future[list[Row]] | None:
        """A place in the next shared statement of `sql`; None when it reads alone."""
        shape = self._shapes.get(sql, _UNKNOWN)
        if shape is _UNKNOWN:
            if len(self._shapes) >= MAX_SHAPES:  # statements are compiled variants: few
                self._shapes.clear()
            shape = self._shapes[sql] = shape_of(sql)
        if shape is None:
            return None
        try:
            values = [as_text(params[name]) for name in shape.names]
        except (KeyError, TypeError):
            return None
        loop = asyncio.get_running_loop()
        batch = self._waiting.get(sql)
        if batch is None:
            batch = self._waiting[sql] = _Batch(shape)
            if self._in_flight.get(sql, 0) < IN_FLIGHT:
                # Sent at the loop's next turn: reads that arrive in this one join it.
                loop.call_soon(self._send, sql)
        future: asyncio.Future[list[Row]] = loop.create_future()
        batch.reads.append((values, params, future))
        if len(batch.reads) >= MAX_BATCH:
            del self._waiting[sql]
            self._start(sql, batch)
        return future

    def _send(self, sql: str) -> None:
        # A batch sent full in the meantime may be on its way: then the one gathering
        # now waits for it (`_run` sends it).
        if self._in_flight.get(sql, 0) >= IN_FLIGHT:
            return
        batch = self._waiting.pop(sql, None)
        if batch is not None:
            self._start(sql, batch)

    def _start(self, sql: str, batch: _Batch) -> None:
        self._in_flight[sql] = self._in_flight.get(sql, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(sql, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, sql: str, batch: _Batch) -> None:
        try:
            if len(batch.reads) == 1:
                await self._alone(sql, batch.reads[0][1], batch.reads[0][2])
            else:
                await self._together(sql, batch)
        finally:
            for _, _, future in batch.reads:
                if not future.done():  # the task itself was cancelled (shutdown)
                    future.cancel()
            self._in_flight[sql] -= 1
            if sql in self._waiting and self._in_flight[sql] < IN_FLIGHT:
                self._send(sql)

    async def _together(self, sql: str, batch: _Batch) -> None:
        shape = batch.shape
        params = {
            f"p{index}": array_literal([values[index] for values, _, _ in batch.reads])
            for index in range(len(shape.names))
        }
        try:
            rows = await self._fetch(shape.sql, params)
        except Exception:
            # One request's values may be what failed: each reads alone, and gets its own.
            await asyncio.gather(*(self._alone(sql, p, f) for _, p, f in batch.reads))
            return
        answers: list[list[Row]] = [[] for _ in batch.reads]
        for row in rows:
            answers[row[0] - 1].append(row[1:-1])
        for (_, _, future), answer in zip(batch.reads, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    async def _alone(
        self, sql: str, params: Mapping[str, Any], future: asyncio.Future[list[Row]]
    ) -> None:
        try:
            rows = await self._fetch(sql, params)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(rows)


_UNKNOWN: Any = object()
