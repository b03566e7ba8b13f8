"""Bulk import at scale: `python -m bench.imports --rows 200000` (issue 4, performance).

Starts a durable embedded PostgreSQL, creates a merchant and a program (expiry 365 days
after the earn) through the domain use cases, writes two CSV files of N rows each, then
measures through the domain use cases (the same code as `alliance import`):

  members     `import_members`: N new members, memberships and accounts;
  balances    `import_balances`: N opening balances (a transaction, two postings and a
              lot each), half with their own earned_at, a quarter with an explicit
              expires_at, the rest from the program's policy;
  re-run      `import_balances` on the same file again: every row found and skipped.

For each: wall time, rows/s (target ≥ 20,000 balance rows/s on the 2-core machine),
PostgreSQL's CPU and the whole machine's (the machine may be shared: a wall time is only
as good as the CPU it got), and the time of every statement over 100 ms from PostgreSQL's
log. Then a diagnosis pass, not timed: the same two imports into a second program with
auto_explain (ANALYZE, triggers), to split the big statement into its parts and its
foreign-key checks. Peak RSS of this process shows that the file is streamed, and
`verify_ledger` runs at the end. Results are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psutil

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres
from alliance.db.engine import Database
from alliance.imports import ImportReport, import_balances, import_members
from alliance.ledger.verify import verify_ledger
from alliance.programs.models import ExpiryPolicy
from alliance.programs.service import create_merchant, create_program

HERE = Path(__file__).resolve().parent
OPERATOR = Actor(Role.OPERATOR, "client:bench-operator", "bench-operator")
UseCase = Callable[..., Awaitable[ImportReport]]
AUTO_EXPLAIN = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "500ms",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_triggers": "on",
    "auto_explain.log_nested_statements": "off",
}


@dataclass
class Run:
    name: str
    seconds: float
    report: ImportReport
    pg_cpu: float
    machine_cpu: float
    statements: list[tuple[float, str]] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[imports {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def write_files(scratch: Path, rows: int, prefix: str) -> tuple[Path, Path]:
    """Members and their opening balances, written row by row (never held in memory)."""
    rng = random.Random(4)
    now = datetime.now(UTC)
    members = scratch / f"{prefix}members.csv"
    balances = scratch / f"{prefix}balances.csv"
    with members.open("w") as m, balances.open("w") as b:
        m.write("member_number,display_name\n")
        b.write("member_number,points,earned_at,expires_at\n")
        for n in range(1, rows + 1):
            number = f"M{n:09d}"
            m.write(f'{number},"会员 Member {n}"\n')
            earned = expires = ""
            if n % 2:
                earned = (now - timedelta(days=rng.randint(1, 300))).strftime(
                    "%Y-%m-%dT%H:%M:%S+08:00"
                )
            if n % 4 == 1:
                expires = (now + timedelta(days=rng.randint(30, 700))).strftime("%Y-%m-%dT%H:%MZ")
            b.write(f"{number},{rng.randint(1, 20_000)},{earned},{expires}\n")
    return members, balances


def server_cpu(server: EmbeddedPostgres) -> float:
    """user+sys seconds of the postmaster and its live children."""
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children()):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def machine_cpu() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def statement_times(log_file: Path, since: int) -> list[tuple[float, str]]:
    """(ms, start of the statement) of what PostgreSQL logged after byte `since`."""
    text = log_file.read_text(errors="replace")[since:]
    pattern = r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): (.*?)(?=\n\S|\Z)"
    return [(float(ms), " ".join(sql.split())[:72]) for ms, sql in re.findall(pattern, text, re.S)]


async def timed(
    server: EmbeddedPostgres, db: Database, name: str, use_case: UseCase, program_id: int,
    path: Path,
) -> Run:  # fmt: skip
    mark = server.log_file.stat().st_size
    with path.open("rb") as source:
        pg0, machine0, started = server_cpu(server), machine_cpu(), time.perf_counter()
        report = await use_case(db, OPERATOR, program_id=program_id, source=source)
        seconds = time.perf_counter() - started
    run = Run(name, seconds, report, server_cpu(server) - pg0, machine_cpu() - machine0,
              statement_times(server.log_file, mark))  # fmt: skip
    log(f"({name}) {report.rows:,} rows in {seconds:.2f} s: {report.rows / seconds:,.0f} rows/s,"
        f" PostgreSQL CPU {run.pg_cpu:.1f} s (imported {report.imported:,},"
        f" skipped {report.skipped:,})")  # fmt: skip
    return run


async def make_program(db: Database, code: str) -> int:
    merchant = await create_merchant(db, OPERATOR, code=code, name=code)
    program = await create_program(
        db, OPERATOR, merchant_id=merchant.id, code="p", name="P", unit_name="pt",
        point_value=Decimal("0.01"), expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=365,
    )  # fmt: skip
    return program.id


async def measure(
    server: EmbeddedPostgres, settings: Settings, rows: int, scratch: Path
) -> dict[str, object]:
    db = Database(server.url("imports"), settings)
    try:
        program_id = await make_program(db, "import-bench")
        log(f"writing {rows:,} rows to each CSV file")
        members_csv, balances_csv = write_files(scratch, rows, "")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runs = [
            await timed(server, db, "members", import_members, program_id, members_csv),
            await timed(server, db, "balances", import_balances, program_id, balances_csv),
            await timed(server, db, "re-run", import_balances, program_id, balances_csv),
        ]
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sizes = (members_csv.stat().st_size, balances_csv.stat().st_size)
        members_csv.unlink()
        balances_csv.unlink()
    finally:
        await db.dispose()
    return {"runs": runs, "rss": (rss_before, rss_after), "sizes": sizes}


async def diagnose(server: EmbeddedPostgres, settings: Settings, rows: int, scratch: Path) -> str:
    """auto_explain's account of the balances import's big statement, triggers included."""
    settings_sql = "; ".join(
        f"ALTER DATABASE imports SET {k} = '{v}'" for k, v in AUTO_EXPLAIN.items()
    )
    server.psql(settings_sql, "imports")
    db = Database(server.url("imports"), settings)  # new sessions pick the settings up
    try:
        program_id = await make_program(db, "import-diagnosis")
        members_csv, balances_csv = write_files(scratch, rows, "diagnosis-")
        with members_csv.open("rb") as source:
            await import_members(db, OPERATOR, program_id=program_id, source=source)
        mark = server.log_file.stat().st_size
        with balances_csv.open("rb") as source:
            await import_balances(db, OPERATOR, program_id=program_id, source=source)
    finally:
        await db.dispose()
        server.psql("; ".join(f"ALTER DATABASE imports RESET {k}" for k in AUTO_EXPLAIN), "imports")
    return server.log_file.read_text(errors="replace")[mark:]


def diagnosis_rows(explained: str) -> list[str]:
    """Markdown rows: each data-modifying node of the big statement, then each trigger."""
    for logged in re.finditer(r"duration: ([0-9.]+) ms +plan:", explained):
        following = re.search(r"\n\d{4}-\d\d-\d\d ", explained[logged.end() :])
        plan = explained[
            logged.end() : logged.end() + (following.start() if following else len(explained))
        ]
        if "WITH opening AS" in plan:
            break
    else:
        return ["| (auto_explain logged no plan of the writing statement) | |"]
    rows = []
    nodes = re.findall(r"-> +(Insert|Update) on (\w+) .*?actual time=[0-9.]+\.\.([0-9.]+)", plan)
    for kind, table, ms in nodes:
        label = f"{kind.lower()} {table} (node time, including any CTE it reads first)"
        rows.append(f"| {label} | {float(ms) / 1000:.2f} |")
    triggers = re.findall(
        r"Trigger (?:for constraint )?(\w+)(?: on \w+)?: time=([0-9.]+) calls=(\d+)", plan
    )
    for name, ms, calls in triggers:
        rows.append(f"| trigger {name} ({int(calls):,} calls) | {float(ms) / 1000:.2f} |")
    fk = sum(float(ms) for name, ms, _ in triggers if name.startswith("fk_"))
    rows.append(f"| **all foreign-key checks** | **{fk / 1000:.2f}** |")
    rows.append(
        f"| **the whole statement, under auto_explain** | **{float(logged.group(1)) / 1000:.2f}** |"
    )
    return rows


def report(
    args: argparse.Namespace,
    figures: dict[str, object],
    diagnosis: list[str],
    load: tuple[float, ...],
) -> str:
    runs: list[Run] = figures["runs"]  # type: ignore[assignment]
    rss_before, rss_after = figures["rss"]  # type: ignore[misc]
    members_size, balances_size = figures["sizes"]  # type: ignore[misc]
    balances = runs[1]
    rate = balances.report.rows / balances.seconds
    cores = os.cpu_count() or 1
    lines = [
        "",
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC — bulk import",
        "",
        f"- Machine: {cores} cores, {platform.platform()}, Python {platform.python_version()};"
        " PostgreSQL 18 (embedded, durable: fsync and synchronous_commit on, shared_buffers"
        " 128MB, wal_buffers 4MB); load average at start"
        f" {', '.join(f'{x:.2f}' for x in load)}",
        f"- Command: `python -m bench.imports --rows {args.rows}`; CSV files of"
        f" {members_size / 1e6:.1f} MB (members) and {balances_size / 1e6:.1f} MB (balances)",
        "",
        "| import | rows | imported | skipped | wall s | rows/s | PostgreSQL CPU s |"
        " machine busy (of 2 cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        busy = run.machine_cpu / run.seconds
        lines.append(
            f"| {run.name} | {run.report.rows:,} | {run.report.imported:,} |"
            f" {run.report.skipped:,} | {run.seconds:.2f} | {run.report.rows / run.seconds:,.0f} |"
            f" {run.pg_cpu:.1f} | {busy:.2f} |"
        )
    lines += [
        "",
        f"Balances: **{rate:,.0f} rows/s** (target ≥ 20,000) — "
        f"**{'PASS' if rate >= 20_000 else 'FAIL'}**. Peak RSS of the importing process: "
        f"{rss_before / 1024:.0f} MB before the imports, {rss_after / 1024:.0f} MB after. "
        f"verify_ledger after: {figures['violations']} violations.",
        "",
        "Statements over 100 ms (PostgreSQL's log, log_min_duration_statement=0):",
        "",
        "| import | ms | statement |",
        "|---|---:|---|",
    ]
    for run in runs:
        for ms, sql in run.statements:
            if ms >= 100:
                lines.append(f"| {run.name} | {ms:,.0f} | `{sql}` |")
    lines += [
        "",
        "Diagnosis pass (not timed above: a second program, same files, auto_explain with"
        " ANALYZE and timing, which slows it): the balances import's writing statement.",
        "",
        "| part | s |",
        "|---|---:|",
        *diagnosis,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="alliance-imports-"))
    server = EmbeddedPostgres(
        scratch / "pg", settings=DURABLE | {"log_min_duration_statement": "0"}
    )
    settings = Settings(secret_key="aW1wb3J0LWJlbmNoLXNlY3JldC1rZXktMzItYnl0ZXM=",
                        data_dir=scratch, access_log=False)  # fmt: skip
    try:
        server.start()
        server.create_database("imports")
        migrate.upgrade(server.url("imports"))
        load = os.getloadavg()
        figures = asyncio.run(measure(server, settings, args.rows, scratch))
        log("diagnosis pass (auto_explain)")
        explained = asyncio.run(diagnose(server, settings, args.rows, scratch))

        async def violations() -> int:
            db = Database(server.url("imports"), settings)
            try:
                return len(await verify_ledger(db))
            finally:
                await db.dispose()

        figures["violations"] = asyncio.run(violations())
        text = report(args, figures, diagnosis_rows(explained), load)
        print(text)
        if not args.no_record:
            with (HERE / "RESULTS.md").open("a") as results:
                results.write(text + "\n")
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
