"""Expiry at scale: `python -m bench.expiry` (issue "Earning rules … validity", performance).

Seeds N due lots (default 1,000,000) with their award transactions, set-based, in a
durable embedded PostgreSQL; copies the database; then measures on identical copies

  (job)       the expiry job, `alliance.ledger.expiry.expire_points`: batches of
              `--batch-size` lots, each one transaction, accounts locked SKIP LOCKED;
  (baseline)  one set-based SQL statement making the same postings for every due lot
              (bench/expiry_baseline.sql): no batches, no locks, one transaction;

and reports wall time, the ratio job / baseline (target ≤ 2), the job process's peak RSS
(memory must stay flat: no lot is loaded into Python), and verifies the ledger after
both. Results are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres
from alliance.db.engine import Database
from alliance.ledger.expiry import expire_points
from alliance.ledger.models import SYSTEM_ACCOUNT_KINDS
from alliance.ledger.verify import verify_ledger

HERE = Path(__file__).resolve().parent
SEED = """
INSERT INTO merchant (code, name) VALUES ('expiry-bench', 'Expiry bench');
INSERT INTO program (merchant_id, code, name, unit_name, point_value, expiry_policy, expiry_value)
VALUES (1, 'p', 'P', 'pt', 0.01, 'days_after_earn', 365);
INSERT INTO account (program_id, kind)
SELECT 1, kind FROM unnest(ARRAY[{system_kinds}]) kind;
INSERT INTO member (display_name) SELECT 'm' || g FROM generate_series(1, {members}) g;
INSERT INTO membership (member_id, program_id, member_number)
SELECT g, 1, 'n' || g FROM generate_series(1, {members}) g;
INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)
SELECT 1, 'member', g, g, 0, 0 FROM generate_series(1, {members}) g;
CREATE TEMP TABLE seed AS
SELECT g AS n, a.id AS account_id, a.member_id, 10 + g % 50 AS amount
  FROM generate_series(1, {lots}) g
  JOIN account a ON a.membership_id = 1 + g % {members};
INSERT INTO ledger_transaction (kind, member_id, idempotency_scope, idempotency_key, reason)
SELECT 'award', member_id, 'seed', 'seed:' || n, 'seed' FROM seed ORDER BY n;
CREATE TEMP TABLE seeded AS
SELECT s.*, t.id AS transaction_id,
       sum(s.amount) OVER (PARTITION BY s.account_id ORDER BY s.n) AS balance_after
  FROM seed s JOIN ledger_transaction t
    ON t.idempotency_scope = 'seed' AND t.idempotency_key = 'seed:' || s.n;
INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount, balance_after)
SELECT transaction_id, leg.account_id, 1, member_id, leg.amount, leg.balance_after
  FROM seeded
 CROSS JOIN LATERAL (VALUES (0, seeded.account_id, seeded.amount, seeded.balance_after),
                            (1, 1::bigint, -seeded.amount, NULL::bigint))  -- 1: `issued`
       AS leg (k, account_id, amount, balance_after)
 ORDER BY seeded.account_id, seeded.n, leg.k;
INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount, remaining,
                 available_at, expires_at)
SELECT account_id, 1, member_id, transaction_id, amount, amount,
       now() - interval '400 days', now() - interval '1 day'
  FROM seeded ORDER BY n;
UPDATE account SET balance = totals.points
  FROM (SELECT account_id, sum(amount) AS points FROM seed GROUP BY account_id) totals
 WHERE account.id = totals.account_id;
"""


def log(message: str) -> None:
    print(f"[expiry {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


async def verify(url: str, settings: Settings) -> int:
    db = Database(url, settings)
    try:
        violations = await verify_ledger(db)
    finally:
        await db.dispose()
    for violation in violations:
        log(f"verify: {violation}")
    return len(violations)


async def run_job(url: str, settings: Settings, batch_size: int) -> tuple[float, int, int]:
    db = Database(url, settings)
    try:
        started = time.perf_counter()
        run = await expire_points(db, batch_size=batch_size)
        return time.perf_counter() - started, run.lots, run.batches
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="alliance-expiry-"))
    server = EmbeddedPostgres(scratch / "pg", settings=DURABLE)
    settings = Settings(secret_key="ZXhwaXJ5LWJlbmNoLXNlY3JldC1rZXktMzItYnl0ZXM=",
                        data_dir=scratch, access_log=False)  # fmt: skip
    try:
        server.start()
        server.create_database("seeded")
        migrate.upgrade(server.url("seeded"))
        log(f"seeding {args.lots:,} due lots over {args.members:,} members")
        started = time.perf_counter()
        with psycopg.connect(server.libpq_url("seeded"), autocommit=True) as conn:
            # Integers only, formatted in: a multi-statement script takes no parameters.
            kinds = ", ".join(f"'{kind.value}'" for kind in SYSTEM_ACCOUNT_KINDS)
            seed = SEED.format(lots=int(args.lots), members=int(args.members), system_kinds=kinds)
            conn.execute(seed.encode())
            conn.execute("VACUUM (ANALYZE)")
        seeding = time.perf_counter() - started
        for copy in ("job", "baseline"):
            server.create_database(copy, template="seeded")

        log(f"(job) expire_points, batches of {args.batch_size}")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        job_seconds, job_lots, batches = asyncio.run(
            run_job(server.url("job"), settings, args.batch_size)
        )
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        log(f"(job) {job_lots:,} lots in {job_seconds:.1f} s, {batches} batches")

        log("(baseline) one set-based statement")
        baseline_sql = (HERE / "expiry_baseline.sql").read_text()
        with psycopg.connect(server.libpq_url("baseline"), autocommit=True) as conn:
            started = time.perf_counter()
            baseline_lots = conn.execute(baseline_sql).fetchone()[0]  # type: ignore[index]
            baseline_seconds = time.perf_counter() - started
        log(f"(baseline) {baseline_lots:,} lots in {baseline_seconds:.1f} s")

        violations = {copy: asyncio.run(verify(server.url(copy), settings))
                      for copy in ("job", "baseline")}  # fmt: skip
        ratio = job_seconds / baseline_seconds
        report = "\n".join(
            [
                "",
                f"## {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC — expiry at scale",
                "",
                f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python "
                f"{platform.python_version()}; PostgreSQL 18 (embedded, fsync on)",
                f"- Command: `python -m bench.expiry --lots {args.lots} --members {args.members}"
                f" --batch-size {args.batch_size}`; seeding {seeding:.1f} s",
                "",
                "| | lots | wall s | lots/s |",
                "|---|---:|---:|---:|",
                f"| (job) expire_points, batches of {args.batch_size} ({batches} batches) | "
                f"{job_lots:,} | {job_seconds:.1f} | {job_lots / job_seconds:,.0f} |",
                f"| (baseline) one set-based statement | {baseline_lots:,} | "
                f"{baseline_seconds:.1f} | {baseline_lots / baseline_seconds:,.0f} |",
                "",
                f"Ratio job / baseline: **{ratio:.2f}** (target ≤ 2) — "
                f"**{'PASS' if ratio <= 2 else 'FAIL'}**. Peak RSS of the job's process: "
                f"{rss_before / 1024:.0f} MB before, {rss_after / 1024:.0f} MB after (flat: lots "
                f"stay in PostgreSQL). verify_ledger after each: {violations['job']} and "
                f"{violations['baseline']} violations.",
            ]
        )
        print(report)
        if not args.no_record:
            with (HERE / "RESULTS.md").open("a") as results:
                results.write(report + "\n")
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(["true"], check=False)


if __name__ == "__main__":
    main()
