"""The application's own CPU per request, in-process: no HTTP server, no load generator.

    python -m bench.inproc [--case award|purchase|exchange|balance|...] [--profile]

It starts a throwaway embedded PostgreSQL, seeds it the way `python -m bench` does,
opens the ASGI app (`gateway.create_app`, lifespan and all) and sends it requests
straight through ASGI, one at a time or `--concurrency` at once. The figure is this
process's CPU time per request, which is what the HTTP cases pay in the workers above
uvicorn's own parsing and socket work: a quick, quiet way to compare a change to the
request path (the HTTP cases on 2 shared cores vary ±10 % run to run; this does not).
PostgreSQL's CPU (its server processes') is reported apart. `--profile` prints cProfile's
top functions; `--pg-statements N` PostgreSQL's costliest statements and functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import pstats
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

import bench.run as bench_run
from alliance.config import Settings
from alliance.db.embedded import THROWAWAY, EmbeddedPostgres
from alliance.db.migrate import upgrade
from alliance.ledger.service import award_points
from bench.run import TIME_ZONE, seed_database
from bench.run import parse_args as bench_args

AWARD_SELECTION = (
    "entry { id points balanceAfter createdAt } replayed userErrors { code message field }"
)
"""What bench/wrk.lua's award asks for."""
BALANCE = b'{"query":"{ viewer { membership { balance { points held } } } }"}'
"""What bench/wrk.lua's balance case asks, with a member token."""
ALLIANCE = (
    b'{"query":"{ allianceBalances { totalValue expiringPoints'
    b' lines { edges { node { programName points value expiringPoints } } } } }"}'
)
"""bench/wrk.lua's allianceBalances case, with the token of a member of five programs."""
PURCHASE = (
    "mutation Purchase($input: RecordPurchaseInput!) { recordPurchase(input: $input)"
    " { entry { id points balanceAfter } breakdown { points } replayed"
    " userErrors { code message field } } }"
)
"""bench/wrk.lua's recordPurchase case (5 rules and 2 promotions seeded)."""
EXCHANGE = (
    "mutation Exchange($input: ExchangePointsInput!) { exchangePoints(input: $input)"
    " { exchange { id pointsOut } fromBalance toBalance replayed"
    " userErrors { code message field } } }"
)
"""bench/wrk.lua's exchangePoints case, one member's two memberships."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        choices=(
            "award",
            "purchase",
            "exchange",
            "typename",
            "balance",
            "alliance",
            "alliance-execute",
            "award-domain",
            "award-execute",
            "typename-execute",
            "balance-execute",
            "purchase-execute",
        ),
        default="award",
        help="award-domain: the domain call alone (award_points), no GraphQL or ASGI; "
        "*-execute: the schema's execute alone (no ASGI, no HTTP view)",
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--selection", default=AWARD_SELECTION, help="awardPoints' selection")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds; the median")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--pg-statements",
        type=int,
        default=0,
        metavar="N",
        help="after the rounds, PostgreSQL's N costliest statements per request, nested"
        " ones (inside functions and triggers) included: pg_stat_statements, track=all",
    )
    parser.add_argument("--access-log", choices=("on", "off"), default="on")
    parser.add_argument(
        "--shared-reads", choices=("on", "off"), default="on",
        help="concurrent reads of one statement share a round trip (alliance/db/shared_reads.py)",
    )  # fmt: skip
    parser.add_argument(
        "--gc-pauses", action="store_true", help="report the cyclic GC's pauses per generation"
    )
    parser.add_argument(
        "--gc-threshold", default="", help="with --gc-pauses: gc.set_threshold, e.g. 2000,50,100"
    )
    return parser.parse_args(argv)


async def _call(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    chunks: list[bytes] = []
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    answer = b"".join(chunks)
    if status != 200 or b'"errors"' in answer or b'"userErrors":[{' in answer:
        raise SystemExit(f"unexpected answer {status}: {answer[:300]!r}")
    return answer


async def _measure(
    call: Callable[[int], Awaitable[None]], calls: int, concurrency: int, postgres: int | None
) -> tuple[float, float]:
    """CPU seconds per call of this process and of PostgreSQL (`postgres`: the
    postmaster's pid; its backends are its children); every call gets a number of its own."""
    per_client = calls // concurrency

    async def client(offset: int) -> None:
        for _ in range(per_client):
            await call(next(_numbers))

    cpu, server = time.process_time(), bench_run.tree_cpu(postgres) or 0.0
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    calls = per_client * concurrency
    app, server = time.process_time() - cpu, (bench_run.tree_cpu(postgres) or 0.0) - server
    return app / calls, server / calls


_numbers = iter(range(10**12))
"""Request numbers (idempotency keys), unique across rounds."""


_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
_started: list[float] = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].append(time.perf_counter() - _started[0])


def _report_gc_pauses() -> None:
    for generation, pauses in _pauses.items():
        if pauses:
            print(f"gc generation {generation}: {len(pauses)} collections, max "
                  f"{max(pauses) * 1e3:.2f} ms, total {sum(pauses) * 1e3:.1f} ms",
                  file=sys.stderr)  # fmt: skip


async def _lifespan(app: Any) -> Callable[[], Awaitable[None]]:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()
    done = asyncio.Event()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()
        elif message["type"].startswith("lifespan.shutdown"):
            done.set()
        elif message["type"] == "lifespan.startup.failed":
            raise SystemExit(message.get("message"))

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                   queue.get, send))  # fmt: skip
    await started.wait()

    async def stop() -> None:
        await queue.put({"type": "lifespan.shutdown"})
        await done.wait()
        await task

    return stop


async def main(argv: list[str] | None = None) -> None:
    options = _arguments(argv)
    from gateway import create_app

    with tempfile.TemporaryDirectory(prefix="alliance-inproc-") as scratch:
        statements = (
            {
                "shared_preload_libraries": "pg_stat_statements",
                "pg_stat_statements.track": "all",
                "track_functions": "all",
            }
            if options.pg_statements
            else {}
        )
        server = EmbeddedPostgres(Path(scratch) / "pg", settings=THROWAWAY | statements)
        server.start()
        try:
            server.create_database("bench")
            url = server.url("bench")
            settings = Settings(
                database_url=url,
                data_dir=Path(scratch) / "data",
                production=True,
                secret_key=base64.b64encode(secrets.token_bytes(32)).decode(),
                time_zone=TIME_ZONE,
                jobs=False,
                access_log=options.access_log == "on",
                shared_reads=options.shared_reads == "on",
            )
            upgrade(url)
            seed = await seed_database(
                url, settings, bench_args(["--members", "4000", "--member-tokens", "10",
                                           "--exchange-members", "50", "--cases", "c,e,f,x"]),
                "inproc")  # fmt: skip
            app = create_app(settings)
            stop = await _lifespan(app)
            if options.gc_pauses:
                import gc

                gc.callbacks.append(_on_gc)
                if options.gc_threshold:
                    gc.set_threshold(*(int(t) for t in options.gc_threshold.split(",")))
            merchant = seed.blocks[0]
            headers = [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {seed.merchant_tokens[0]}".encode()),
            ]
            nonce = random.getrandbits(40)
            query = (
                "mutation Award($input: MovePointsInput!)"
                f" {{ awardPoints(input: $input) {{ {options.selection} }} }}"
            )

            def award(n: int) -> bytes:
                membership = random.randint(merchant[0], merchant[1])
                variables = {"input": {
                    "membershipId": _gid("Membership", membership), "points": 10,
                    "reason": "inproc", "idempotencyKey": f"inproc-{nonce}-{n}"}}  # fmt: skip
                return orjson.dumps({"query": query, "variables": variables})

            def purchase(n: int) -> bytes:
                # As bench/wrk.lua's purchase case: three lines that hit several rules.
                membership = random.randint(merchant[0], merchant[1])
                food, wine, gift = (
                    random.randint(10, 300),
                    random.randint(0, 200),
                    random.randint(0, 50),
                )
                variables = {"input": {
                    "membershipId": _gid("Membership", membership),
                    "orderId": f"inproc-{nonce}-{n}", "amount": f"{food + wine + gift}.50",
                    "channel": "app", "lines": [
                        {"sku": "dish", "category": "food", "amount": f"{food}.50"},
                        {"sku": "bottle", "category": "wine", "amount": str(wine)},
                        {"sku": "card", "category": "gift-card", "amount": str(gift)},
                    ]}}  # fmt: skip
                return orjson.dumps({"query": PURCHASE, "variables": variables})

            def exchange(n: int) -> bytes:
                # The members in turn (each holds points for a million exchanges' worth).
                _, source, target = seed.exchangers[n % len(seed.exchangers)]
                variables = {"input": {
                    "fromMembershipId": _gid("Membership", source),
                    "toMembershipId": _gid("Membership", target),
                    "points": random.randint(100, 300),
                    "idempotencyKey": f"inproc-{nonce}-{n}"}}  # fmt: skip
                return orjson.dumps({"query": EXCHANGE, "variables": variables})

            def typename(n: int) -> bytes:
                return b'{"query":"{ __typename }"}'

            def balance(n: int) -> bytes:
                return BALANCE

            def alliance(n: int) -> bytes:
                return ALLIANCE

            kind = options.case.split("-")[0]
            if kind == "purchase":  # the seeded rules take effect a few seconds after seeding
                await asyncio.sleep(max(0.0, bench_run.RULES_IN_FORCE_AT - time.time()))
            body = {"typename": typename, "balance": balance, "alliance": alliance,
                    "purchase": purchase, "exchange": exchange}.get(kind, award)  # fmt: skip
            if kind in ("balance", "alliance"):
                tokens = seed.alliance_tokens if kind == "alliance" else seed.member_tokens
                headers = [
                    (b"content-type", b"application/json"),
                    (b"authorization", f"Bearer {tokens[0]}".encode()),
                ]
            services = app.app.state.services
            if options.case.endswith("-execute"):
                token = headers[1][1].decode().removeprefix("Bearer ")
                actor = await services.verifier.verify(token)
                view_schema = _graphql_view(app).schema
                from schema.context import Context

                async def call(n: int) -> None:
                    request = orjson.loads(body(n))
                    result = await view_schema.execute(
                        request["query"],
                        variable_values=request.get("variables"),
                        context_value=Context(services.db, settings, actor),
                    )
                    if result.errors:
                        raise SystemExit(str(result.errors))
                    orjson.dumps(result.data)

            elif options.case == "award-domain":
                actor = await services.verifier.verify(seed.merchant_tokens[0])

                async def call(n: int) -> None:
                    membership = random.randint(merchant[0], merchant[1])
                    await award_points(
                        services.db, actor, membership_id=membership, points=10,
                        reason="inproc", idempotency_key=f"inproc-{nonce}-{n}",
                    )  # fmt: skip

            elif kind == "exchange":
                by_member = [
                    [(b"content-type", b"application/json"),
                     (b"authorization", f"Bearer {token}".encode())]
                    for token, _, _ in seed.exchangers
                ]  # fmt: skip

                async def call(n: int) -> None:
                    await _call(app, by_member[n % len(by_member)], body(n))

            else:

                async def call(n: int) -> None:
                    await _call(app, headers, body(n))

            if options.pg_statements:
                server.psql("CREATE EXTENSION pg_stat_statements", "bench")
            postmaster = int((Path(scratch) / "pg" / "postmaster.pid").read_text().split()[0])
            await _measure(call, min(500, options.requests), 1, None)  # warm-up
            if options.pg_statements:
                server.psql("SELECT pg_stat_statements_reset(), pg_stat_reset()", "bench")
            measured = [
                await _measure(call, options.requests, options.concurrency, postmaster)
                for _ in range(options.rounds)
            ]
            figures = [app for app, _ in measured]
            if options.gc_pauses:
                _report_gc_pauses()
            if options.pg_statements:
                _print_statements(server, options.pg_statements, options.requests * options.rounds)
            rounds = ", ".join(f"{f * 1e3:.3f}" for f in figures)
            print(f"{options.case}: {statistics.median(figures) * 1e3:.3f} ms CPU per request"
                  f" (median of {options.rounds}: {rounds};"
                  f" {options.requests} requests, concurrency {options.concurrency});"
                  f" PostgreSQL {statistics.median(pg for _, pg in measured) * 1e3:.3f} ms",
                  file=sys.stderr)  # fmt: skip
            if options.profile:
                profiler = cProfile.Profile(time.process_time)  # CPU, not waits
                profiler.enable()
                await _measure(call, options.requests, options.concurrency, None)
                profiler.disable()
                _print_profile(profiler)
            await stop()
        finally:
            server.destroy()


def _print_statements(server: EmbeddedPostgres, top: int, requests: int) -> None:
    """What cost PostgreSQL most since the warm-up, per request: statements (execution
    and planning time in µs; a function's own row includes the statements nested in it),
    then functions (their own time, and with what they call)."""
    r = requests
    statements = (
        f"SELECT round((total_exec_time * 1000 / {r})::numeric, 1) AS us_per_request,"
        f" round((total_plan_time * 1000 / {r})::numeric, 1) AS plan_us,"
        f" round(calls::numeric / {r}, 2) AS calls_per_request, toplevel,"
        " left(regexp_replace(query, '\\s+', ' ', 'g'), 150) AS query"
        " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
        f" WHERE datname = 'bench') AND calls >= {r} / 100"  # shared reads: 1 per batch
        f" ORDER BY total_exec_time DESC LIMIT {top}"
    )
    functions = (
        f"SELECT round((self_time * 1000 / {r})::numeric, 1) AS self_us_per_request,"
        f" round((total_time * 1000 / {r})::numeric, 1) AS total_us_per_request,"
        f" round(calls::numeric / {r}, 2) AS calls_per_request, funcname"
        f" FROM pg_stat_user_functions WHERE calls >= {r} / 2"
        f" ORDER BY self_time DESC LIMIT {top}"
    )
    for sql in (statements, functions):
        print(server.psql(sql, "bench"), file=sys.stderr)


def _print_profile(profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    stats.print_callers("isinstance|__new__|<lambda>")
    print(out.getvalue(), file=sys.stderr)


def _graphql_view(app: Any) -> Any:
    from gateway import GraphQLEndpoint

    for route in app.app.routes:
        if isinstance(route.endpoint, GraphQLEndpoint):
            return route.endpoint.view
    raise SystemExit("no GraphQL endpoint")


def _gid(type_name: str, pk: int) -> str:
    from strawberry import relay

    return str(relay.GlobalID(type_name, str(pk)))


if __name__ == "__main__":
    import uvloop  # what `alliance serve` runs on (uvicorn --loop uvloop)

    uvloop.run(main())
