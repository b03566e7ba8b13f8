"""What both imports share: the program check, the transaction, COPY into staging, errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.errors import Inactive, NotFound
from alliance.imports.csvfile import Layout, read_records
from alliance.imports.errors import ErrorLog, RowError, RowProblem
from alliance.programs.models import Program

Connection = psycopg.AsyncConnection[tuple[Any, ...]]

MAX_ERRORS = 100
"""Row errors kept for the report (all of them are counted)."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    program_id: int
    source: str
    rows: int
    """Data rows in the file."""
    imported: int
    skipped: int
    """Rows already imported by an earlier run of the same file (unchanged)."""
    points: int = 0
    """Balances: points credited by this run."""


async def authorized_program(session: AsyncSession, actor: Actor, program_id: int) -> Program:
    """The program, if the actor may import into it: the operator, or its own merchant."""
    actor.require(Role.OPERATOR, Role.MERCHANT)
    program = await session.get(Program, program_id)
    if program is None or (
        actor.role is Role.MERCHANT and program.merchant_id != actor.merchant_id
    ):
        raise NotFound("program not found", field=("programId",))
    if program.status != "active":
        raise Inactive("program is closed", field=("programId",))
    return program


async def execute(
    conn: Connection, sql: str, params: Mapping[str, Any] | None = None
) -> psycopg.AsyncCursor[tuple[Any, ...]]:
    """One statement of an import, never prepared: each import brings new temporary
    tables and its own row counts, so a cached generic plan would fit the wrong data."""
    return await conn.execute(sql, params, prepare=False)


async def begin_import(session: AsyncSession, program_id: int) -> Connection:
    """The psycopg connection of the session's transaction, set up for one import.

    One import per program at a time (a transaction-level advisory lock): two
    imports of the same program would otherwise lock the same accounts in
    different orders. Every other writer locks one account of a program, so it
    only ever waits for the import, never deadlocks with it. An import is an
    operator's batch job: the API's statement timeout does not apply to it, and
    its sorts and hashes over every row of the file may use memory (as verify's).
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    conn: Connection = raw.driver_connection  # type: ignore[assignment]
    await execute(conn, "SET LOCAL statement_timeout = 0")
    await execute(conn, "SET LOCAL work_mem = '256MB'")
    await execute(
        conn,
        "SELECT pg_advisory_xact_lock(hashtextextended('alliance.import:' || %(program)s, 0))",
        {"program": str(program_id)},
    )
    return conn


async def stage(
    conn: Connection, table: str, layout: Layout, source: IO[bytes], errors: ErrorLog
) -> int:
    """COPY the file's well-formed rows into the TEMP `table`; how many there were.

    The table has `line` followed by the layout's columns, all text. Rows go to
    the server as they are read (psycopg sends its buffer every 32 KiB or so).
    """
    columns = ", ".join(("line", *layout.columns))
    rows = 0
    async with conn.cursor() as cursor:
        async with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for record in read_records(source, layout, errors):
                await copy.write_row(record)
                rows += 1
        # Temporary tables are never analysed by autovacuum: without statistics
        # the checks below would be planned for a handful of rows.
        await cursor.execute(f"ANALYZE {table}", prepare=False)
    return rows


async def collect_errors(
    conn: Connection, sql: str, params: dict[str, Any], errors: ErrorLog
) -> None:
    """Row errors found by `sql`: rows of (line, member number, problem, detail, total)."""
    async with conn.cursor() as cursor:
        await cursor.execute(sql, params | {"limit": errors.limit}, prepare=False)
        found = await cursor.fetchall()
    if found:
        errors.merge(
            [RowError.of(line, RowProblem(problem), member_number=number, detail=detail)
             for line, number, problem, detail, _ in found],
            int(found[0][4]),
        )  # fmt: skip


def source_name(source: IO[bytes]) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"
