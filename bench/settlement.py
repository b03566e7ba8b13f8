"""Settlement at scale: `python -m bench.settlement` (issue "Points exchange … settlement").

Seeds N obligations (default 1,000,000) across M merchants (default 20) in one settlement
day, set-based, each with its ledger transaction; then measures

  (run)       `run_settlement`: watermark, aggregate, statements, lines, period closed;
  (baseline)  the bare SQL aggregate over the same rows: one GROUP BY, nothing written;

and reports wall times, the ratio run / baseline (target ≤ 2), the process's peak RSS
(flat: obligations are aggregated in PostgreSQL, never loaded), and checks after the run
that the statements equal their obligations. Results are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import text

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres
from alliance.db.engine import Database
from alliance.ledger.verify import run_checks
from alliance.settlement import run as settlement_run
from alliance.settlement.reconcile import SETTLEMENT_CHECKS

HERE = Path(__file__).resolve().parent
ALLIANCE_FINANCE = Actor(Role.FINANCE, "client:bench-finance", "bench-finance")
SEED = """
INSERT INTO merchant (code, name)
SELECT 'm' || g, 'Merchant ' || g FROM generate_series(1, {merchants}) g;
INSERT INTO program (merchant_id, code, name, unit_name, point_value)
SELECT g, 'p', 'P' || g, 'pt', 0.005 + (g % 7) * 0.0025 FROM generate_series(1, {merchants}) g;
INSERT INTO member (display_name) VALUES ('bench');
CREATE TEMP TABLE seed AS
SELECT g AS n,
       CASE WHEN g % 10 < 7 THEN 'exchange' WHEN g % 10 = 7 THEN 'exchange_fee'
            ELSE 'partner_redemption' END AS kind,
       1 + g % {merchants} AS debtor,
       1 + (g % {merchants} + 1 + (g / {merchants}) % ({merchants} - 1)) % {merchants} AS creditor,
       1 + g % 500 AS points,
       '{day}'::timestamptz + make_interval(secs => (g % 86000)) AS occurred_at
  FROM generate_series(1, {obligations}) g;
INSERT INTO ledger_transaction (kind, member_id, idempotency_scope, idempotency_key, reason)
SELECT CASE WHEN kind = 'partner_redemption' THEN 'partner_redemption' ELSE 'exchange' END,
       1, 'seed', 'seed:' || n, 'seed' FROM seed ORDER BY n;
INSERT INTO settlement_obligation (transaction_id, kind, debtor_merchant_id, creditor_merchant_id,
                                   program_id, member_id, points, point_value, amount, occurred_at)
SELECT t.id, s.kind, s.debtor, CASE WHEN s.kind = 'exchange_fee' THEN NULL ELSE s.creditor END,
       p.id, 1, s.points, p.point_value, s.points * p.point_value, s.occurred_at
  FROM seed s
  JOIN ledger_transaction t ON t.idempotency_scope = 'seed' AND t.idempotency_key = 'seed:' || s.n
  JOIN program p ON p.merchant_id = CASE WHEN s.kind = 'exchange' THEN s.creditor ELSE s.debtor END
 ORDER BY s.n;
"""
HISTORY = """
CREATE TEMP TABLE history AS
SELECT g AS n, o.kind, o.debtor_merchant_id, o.creditor_merchant_id, o.program_id, o.points,
       o.point_value, o.amount, o.occurred_at - interval '7 days' AS occurred_at
  FROM generate_series(1, {history}) g
  JOIN settlement_obligation o ON o.id = 1 + (g - 1) % {obligations};
INSERT INTO ledger_transaction (kind, member_id, idempotency_scope, idempotency_key, reason)
SELECT 'exchange', 1, 'history', 'history:' || n, 'seed' FROM history ORDER BY n;
INSERT INTO settlement_obligation (transaction_id, kind, debtor_merchant_id, creditor_merchant_id,
                                   program_id, member_id, points, point_value, amount, occurred_at)
SELECT t.id, h.kind, h.debtor_merchant_id, h.creditor_merchant_id, h.program_id, 1, h.points,
       h.point_value, h.amount, h.occurred_at
  FROM history h
  JOIN ledger_transaction t
    ON t.idempotency_scope = 'history' AND t.idempotency_key = 'history:' || h.n
 ORDER BY h.n;
"""
BASELINE = """SELECT kind, debtor_merchant_id, creditor_merchant_id, count(*), sum(points),
       sum(amount)
  FROM settlement_obligation WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
 GROUP BY 1, 2, 3"""


def log(message: str) -> None:
    print(f"[settlement {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


async def run_once(url: str, settings: Settings, day: datetime) -> tuple[float, int, int]:
    db = Database(url, settings)
    try:
        await db.fetch_one("SELECT 1")  # the pool is open before the clock starts
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
        # The history's periods (a week before) close first, unmeasured.
        await settlement_run.run_settlement(db, ALLIANCE_FINANCE, until=day)
        started = time.perf_counter()
        periods = await settlement_run.run_settlement(db, ALLIANCE_FINANCE)
        seconds = time.perf_counter() - started
        # The seeded transactions have no postings, so only the statement checks apply.
        violations = await run_checks(
            db,
            tuple(
                c
                for c in SETTLEMENT_CHECKS
                if c.name
                in ("statements_equal_obligations", "statement_nets", "periods_follow_each_other")
            ),
        )
        taken = sum(p.obligations or 0 for p in periods)
        return seconds, taken, len(violations)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obligations", type=int, default=1_000_000)
    parser.add_argument("--merchants", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="obligations of a week before, settled before the measured run (0)",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="alliance-settlement-"))
    server = EmbeddedPostgres(scratch / "pg", settings=DURABLE)
    settings = Settings(secret_key="c2V0dGxlbWVudC1iZW5jaC1zZWNyZXQta2V5LTMyYnk=",
                        data_dir=scratch, access_log=False)  # fmt: skip
    zone = settings.zone
    local_today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    day = local_today - timedelta(days=1)
    try:
        server.start()
        server.create_database("seeded")
        migrate.upgrade(server.url("seeded"))
        log(f"seeding {args.obligations:,} obligations across {args.merchants} merchants")
        started = time.perf_counter()
        with psycopg.connect(server.libpq_url("seeded"), autocommit=True) as conn:
            conn.execute(SEED.format(obligations=int(args.obligations),
                                     merchants=int(args.merchants),
                                     day=day.isoformat()).encode())  # fmt: skip
            if args.history:
                log(f"seeding {args.history:,} obligations of a week before")
                history = HISTORY.format(history=int(args.history),
                                         obligations=int(args.obligations))  # fmt: skip
                conn.execute(history.encode())
            conn.execute("VACUUM (ANALYZE)")
        seeding = time.perf_counter() - started
        baseline_times, run_times, rss = [], [], []
        for attempt in range(args.repeat):
            copy = f"run{attempt}"
            server.create_database(copy, template="seeded")
            with psycopg.connect(server.libpq_url(copy), autocommit=True) as conn:
                started = time.perf_counter()
                groups = conn.execute(BASELINE, {"start": day, "end": local_today}).fetchall()
                baseline_times.append(time.perf_counter() - started)
            seconds, taken, violations = asyncio.run(run_once(server.url(copy), settings, day))
            run_times.append(seconds)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            log(
                f"attempt {attempt + 1}: baseline {baseline_times[-1]:.2f} s ({len(groups)} "
                f"groups), run {seconds:.2f} s ({taken:,} obligations, {violations} violations)"
            )
            if taken != args.obligations or violations:
                raise SystemExit("the run did not settle every obligation exactly")
        baseline, run = statistics.median(baseline_times), statistics.median(run_times)
        ratio = run / baseline
        report = "\n".join([
            "",
            f"## {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC — settlement run at scale",
            "",
            f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python "
            f"{platform.python_version()}; PostgreSQL 18 (embedded, fsync on)",
            f"- Command: `python -m bench.settlement --obligations {args.obligations}"
            f" --merchants {args.merchants} --repeat {args.repeat} --history {args.history}`;"
            f" {args.history:,} older obligations already settled; seeding {seeding:.1f} s;"
            " medians of the attempts, each on a fresh copy of the seeded database",
            "",
            "| | wall s |",
            "|---|---:|",
            f"| (run) run_settlement: watermark, aggregate, {len(groups)} gross groups → "
            f"statements and lines, period closed | {run:.2f} |",
            f"| (baseline) bare SQL aggregate over the same rows | {baseline:.2f} |",
            "",
            f"Ratio run / baseline: **{ratio:.2f}** (target ≤ 2) — "
            f"**{'PASS' if ratio <= 2 else 'FAIL'}**. Peak RSS of the process: "
            f"{max(rss):.0f} MB (flat: obligations are summed in PostgreSQL). Settlement "
            "checks of `verify` after each run: 0 violations.",
        ])  # fmt: skip
        print(report)
        if not args.no_record:
            with (HERE / "RESULTS.md").open("a") as results:
                results.write(report + "\n")
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
