"""Webhook delivery: `python -m bench.webhooks` (issue 9, performance).

In a durable embedded PostgreSQL, one merchant with `--members` members and one webhook
endpoint taking every topic, served by a local receiver (uvicorn + Starlette in a thread,
a real socket) that checks nothing but records when each event arrived:

  (rate)     `--backlog` awards written first, then the dispatcher (`dispatch_due`, as
             `alliance jobs run webhooks` runs it) delivers them all: events per second;
  (latency)  awards at `--rate` per second for `--duration` seconds through the domain
             (`award_points`), with the dispatcher loop of `alliance serve`
             (`run_webhook_dispatcher`) running beside them at `--interval`: end-to-end
             latency from the award's commit-time `created_at` to its arrival, p50/p99.

Everything runs on this machine's cores (producer, dispatcher, receiver, PostgreSQL).
Prints the figures and writes them as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres
from alliance.db.engine import Database
from alliance.events.dispatcher import dispatch_due, run_webhook_dispatcher
from alliance.events.webhooks import register_endpoint
from alliance.ledger.service import award_points
from alliance.members.service import enroll_member
from alliance.programs.service import create_merchant, create_program

OPERATOR = Actor(Role.OPERATOR, "client:bench", "bench")


class Receiver:
    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.created: dict[int, float] = {}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    async def hook(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.arrived.setdefault(body["id"], time.time())
        self.created[body["id"]] = datetime.fromisoformat(body["created_at"]).timestamp()
        return Response("ok")

    def start(self) -> uvicorn.Server:
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.02)
        return server


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    db = Database(url, settings)
    receiver = Receiver()
    server = receiver.start()
    try:
        merchant = await create_merchant(db, OPERATOR, code="hooks", name="Hooks")
        program = await create_program(
            db, OPERATOR, merchant_id=merchant.id, code="p", name="P", unit_name="pt",
            point_value=Decimal("0.01"),
        )  # fmt: skip
        staff = Actor(Role.MERCHANT, "client:pos", "pos", merchant_id=merchant.id)
        memberships = [
            (await enroll_member(db, staff, program_id=program.id, member_number=f"m{n}")).id
            for n in range(args.members)
        ]
        await register_endpoint(
            db, staff, url=f"http://127.0.0.1:{receiver.port}/hook", event_types=["*"]
        )
        keys = iter(range(10**9))

        async def award(n: int) -> None:
            await award_points(
                db, staff, membership_id=memberships[n % len(memberships)], points=1,
                reason="bench", idempotency_key=f"k{next(keys)}",
            )  # fmt: skip

        # (rate): a backlog, then the dispatcher alone.
        for start in range(0, args.backlog, 200):
            await asyncio.gather(*(award(n) for n in range(start, min(args.backlog, start + 200))))
        started = time.perf_counter()
        done = await dispatch_due(db)
        rate_seconds = time.perf_counter() - started
        assert done.delivered == args.backlog, done
        delivery_rate = args.backlog / rate_seconds

        # (latency): awards at a steady rate with the serve loop dispatching beside them.
        receiver.arrived.clear()
        receiver.created.clear()
        dispatcher = asyncio.create_task(run_webhook_dispatcher(db, interval_seconds=args.interval))
        total = args.rate * args.duration
        pending: list[asyncio.Task[None]] = []
        began = time.perf_counter()
        for n in range(total):
            delay = began + n / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(award(args.backlog + n)))
        await asyncio.gather(*pending)
        produced_seconds = time.perf_counter() - began
        deadline = time.monotonic() + 60
        while len(receiver.arrived) < total and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        latencies = [(receiver.arrived[i] - receiver.created[i]) * 1000 for i in receiver.arrived]
        return {
            "backlog": args.backlog,
            "delivery_seconds": round(rate_seconds, 2),
            "deliveries_per_second": round(delivery_rate, 1),
            "rate_target": args.rate,
            "rate_achieved": round(total / produced_seconds, 1),
            "events": total,
            "arrived": len(receiver.arrived),
            "interval_seconds": args.interval,
            "latency_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p90": round(_percentile(latencies, 0.90), 1),
                "p99": round(_percentile(latencies, 0.99), 1),
                "max": round(max(latencies), 1),
            },
        }
    finally:
        server.should_exit = True
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=500, help="awards per second (500)")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument(
        "--interval", type=float, default=0.25,
        help="the dispatcher's sleep after an idle round (serve: 0.25)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="alliance-webhooks-"))
    server = EmbeddedPostgres(scratch / "pg", settings=DURABLE)
    settings = Settings(secret_key="d2ViaG9vay1iZW5jaC1zZWNyZXQta2V5LTMyLWJ5dGU=",
                        data_dir=scratch, pool_size=16, access_log=False)  # fmt: skip
    try:
        server.start()
        server.create_database("hooks")
        migrate.upgrade(server.url("hooks"))
        result = asyncio.run(run(server.url("hooks"), settings, args))
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
