"""Debits on accounts with many open lots: `python -m bench.lots`.

A member who earns often and spends seldom has an open lot per earn. Every debit
(spend, exchange, partner redemption, gift, adjustment) and every hold must check that
the spendable lots cover it and consume the soonest-expiring ones; this measures what
one such call costs as the number of open lots grows, on a durable embedded PostgreSQL,
one connection, sequential calls, `synchronous_commit = off` for the session so that the
WAL flush of each commit (about 1 ms here, the same for every call) does not hide the
work (the database's own cost, no HTTP):

  (spend)  `ledger_spend` of 1 point;
  (hold)   `ledger_hold_authorize` of 1 point, then `ledger_hold_void`.

Prints ms per call for each lot count and writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres

SEED = """
INSERT INTO merchant (code, name) VALUES ('lots', 'Lots') RETURNING id
"""

SPEND = (
    "SELECT balance_after FROM ledger_spend('bench', %(key)s, '\\x00', 'bench', %(merchant)s,"
    " NULL, %(membership)s, 1, 'bench', 'UTC')"
)
HOLD = (
    "SELECT id FROM ledger_hold_authorize('bench', %(key)s, '\\x00', %(merchant)s, NULL,"
    " %(membership)s, 1, 'discount', 60, 'bench')"
)
VOID = "SELECT status FROM ledger_hold_void(%(hold)s, %(merchant)s, NULL)"


def _setup(conn: psycopg.Connection[Any], counts: list[int]) -> tuple[int, dict[int, int]]:
    merchant = conn.execute(SEED).fetchone()[0]  # type: ignore[index]
    program = conn.execute(  # type: ignore[index]
        "INSERT INTO program (merchant_id, code, name, unit_name, point_value, expiry_policy)"
        " VALUES (%s, 'p', 'P', 'pt', 0.01, 'never') RETURNING id",
        (merchant,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO account (program_id, kind) SELECT %s, kind FROM unnest(ARRAY['issued',"
        " 'redeemed', 'expired', 'exchanged_out', 'exchanged_in', 'adjustment', 'fee']) kind",
        (program,),
    )
    memberships: dict[int, int] = {}
    for count in counts:
        member = conn.execute(  # type: ignore[index]
            "INSERT INTO member (display_name) VALUES ('m') RETURNING id"
        ).fetchone()[0]
        membership = conn.execute(  # type: ignore[index]
            "INSERT INTO membership (member_id, program_id, member_number)"
            " VALUES (%s, %s, %s) RETURNING id",
            (member, program, f"n{count}"),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)"
            " VALUES (%s, 'member', %s, %s, 0, 0)",
            (program, membership, member),
        )
        started = time.perf_counter()
        conn.execute(
            "SELECT count(*) FROM generate_series(1, %(n)s) g, LATERAL ledger_award("
            "'seed', %(m)s || ':' || g, '\\x00', 'seed', %(merchant)s, NULL, %(m)s, 1000,"
            " 'seed', 'UTC')",
            {"n": count, "m": membership, "merchant": merchant},
        )
        print(f"seeded {count} lots in {time.perf_counter() - started:.1f} s", flush=True)
        memberships[count] = membership
    conn.execute("VACUUM ANALYZE")
    return merchant, memberships


def _time(conn: psycopg.Connection[Any], calls: int, one: Any) -> float:
    samples = []
    for n in range(calls):
        started = time.perf_counter()
        one(n)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def run(url: str, counts: list[int], calls: int) -> dict[str, Any]:
    result: dict[str, Any] = {"calls": calls, "ms_per_call": {}}
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        merchant, memberships = _setup(conn, counts)
        conn.execute("SET synchronous_commit = off")
        for count, membership in memberships.items():
            args = {"merchant": merchant, "membership": membership}

            def spend(n: int, args: dict[str, Any] = args, count: int = count) -> None:
                conn.execute(SPEND, {**args, "key": f"s{count}:{n}"})

            def hold(n: int, args: dict[str, Any] = args, count: int = count) -> None:
                held = conn.execute(HOLD, {**args, "key": f"h{count}:{n}"}).fetchone()
                conn.execute(VOID, {**args, "hold": held[0]})  # type: ignore[index]

            _time(conn, 20, spend)  # warm the plans and the cache
            figures = {"spend": _time(conn, calls, spend), "hold": _time(conn, calls, hold)}
            result["ms_per_call"][count] = {k: round(v, 3) for k, v in figures.items()}
            print(f"{count:>7} open lots: spend {figures['spend']:.3f} ms,"
                  f" hold + void {figures['hold']:.3f} ms (medians)", flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", default="1,100,1000,10000",
                        help="open lots per account, comma-separated")  # fmt: skip
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.lots.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="alliance-lots-"))
    server = EmbeddedPostgres(scratch / "pg", settings=DURABLE)
    try:
        server.start()
        server.create_database("lots")
        migrate.upgrade(server.url("lots"))
        result = run(server.url("lots").replace("+psycopg", ""), counts, args.calls)
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
