"""The command line and the demo seed, against the test database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from sqlalchemy import func, select

from alliance.auth.tokens import TokenVerifier
from alliance.db.engine import Database
from alliance.demo import seed_demo
from alliance.ledger.models import LedgerTransaction
from alliance.members.models import Membership
from tests.factories import (
    OPERATOR,
    make_ladder,
    make_membership,
    make_merchant,
    make_program,
    qualify,
)
from tests.graphql.helpers import ok


async def _alliance(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "ALLIANCE_DATABASE_URL": db.url,
        "ALLIANCE_SECRET_KEY": db.settings.secret_key or "",
        "ALLIANCE_DATA_DIR": str(db.settings.data_dir),
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _counts(db: Database) -> tuple[int, int]:
    async with db.autocommit() as conn:
        transactions = await conn.scalar(select(func.count()).select_from(LedgerTransaction))
        memberships = await conn.scalar(select(func.count()).select_from(Membership))
    return int(transactions or 0), int(memberships or 0)


async def test_demo_seed_is_idempotent(db: Database) -> None:
    first = await seed_demo(db)
    counts = await _counts(db)
    second = await seed_demo(db)
    assert await _counts(db) == counts
    assert counts[0] > 5
    assert set(first.tokens) == set(second.tokens)
    verifier = TokenVerifier(db, db.settings)
    roles = {(await verifier.verify(token)).role.value for token in second.tokens.values()}
    assert roles == {"operator", "merchant", "finance", "auditor", "member"}


async def test_demo_has_a_tier_ladder(db: Database) -> None:
    await seed_demo(db)
    data = await ok(
        db,
        OPERATOR,
        """{ programs { edges { node { code
        tiers { edges { node { name multiplier } } }
        memberships { edges { node { memberNumber tier { code } } } } } } } }""",
    )
    programs = {edge["node"]["code"]: edge["node"] for edge in data["programs"]["edges"]}
    wok = programs["wok-rewards"]
    assert [edge["node"]["multiplier"] for edge in wok["tiers"]["edges"]] == ["1", "1.5", "2"]
    tiers = {
        e["node"]["memberNumber"]: e["node"]["tier"]["code"] for e in wok["memberships"]["edges"]
    }
    assert tiers == {"W-8812": "regular", "W-8813": "gold"}


async def test_client_create_then_token(db: Database) -> None:
    await make_merchant(db, code="tea-house")
    created = await _alliance(
        db, "client", "create", "--name", "Tea POS", "--role", "merchant",
        "--merchant", "tea-house", "--client-id", "tea-pos",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "client_secret" in created.stdout
    minted = await _alliance(db, "token", "--client", "tea-pos")
    assert minted.returncode == 0, minted.stderr
    actor = await TokenVerifier(db, db.settings).verify(minted.stdout.strip())
    assert (actor.role.value, actor.client_id) == ("merchant", "tea-pos")


async def test_unknown_client_token_fails_cleanly(db: Database) -> None:
    result = await _alliance(db, "token", "--client", "nobody")
    assert result.returncode == 2
    assert "no client nobody" in result.stderr
    assert "Traceback" not in result.stderr


async def test_keys_rotate_keeps_old_tokens_valid(db: Database) -> None:
    await _alliance(db, "client", "create", "--name", "ops", "--role", "operator",
                    "--client-id", "ops")  # fmt: skip
    old = (await _alliance(db, "token", "--client", "ops")).stdout.strip()
    rotated = await _alliance(db, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    listed = await _alliance(db, "keys", "list")
    assert len(listed.stdout.split()) == 2
    verifier = TokenVerifier(db, db.settings)
    assert (await verifier.verify(old)).client_id == "ops"


async def test_schema_export_check(db: Database) -> None:
    result = await _alliance(db, "schema", "export", "--check")
    assert result.returncode == 0, result.stderr


async def test_serve_runs_workers_and_stops_cleanly(db: Database) -> None:
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "ALLIANCE_DATABASE_URL": db.url,
        "ALLIANCE_SECRET_KEY": db.settings.secret_key or "",
        "ALLIANCE_DATA_DIR": str(db.settings.data_dir),
    }
    server = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, polled below
        [sys.executable, "-m", "alliance", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(ready):
            assert server.poll() is None, "the server exited early"
            assert time.monotonic() < deadline, "the server never became ready"
            await asyncio.sleep(0.3)
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(server.communicate, timeout=60)
    assert server.returncode == 0, output.decode()[-2000:]
    assert output.decode().count("Application startup complete") == 2


async def test_jobs_run_tiers(db: Database) -> None:
    program = await make_program(db)
    await make_ladder(db, program, grace_days=0)
    membership = await make_membership(db, program)
    await qualify(db, membership, program, spend=1500)
    await qualify(db, membership, program, spend=-1000)
    result = await _alliance(db, "jobs", "run", "tiers", "--batch-size", "10")
    assert result.returncode == 0, result.stderr
    assert "reviewed 1 memberships in 1 batches: 1 tier changes" in result.stdout
    refused = await _alliance(db, "jobs", "run", "tiers", "--batch-size", "0")
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr


async def test_jobs_run_holds(db: Database) -> None:
    from alliance.ledger.holds import authorize_hold
    from tests.factories import give_points, merchant_actor

    program = await make_program(db)
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 50)
    hold = await authorize_hold(db, merchant_actor(program.merchant_id),
                                membership_id=membership.id, points=20, kind="discount",
                                reason="bill", idempotency_key="h", ttl_seconds=10)  # fmt: skip
    await db.fetch_one(
        "UPDATE hold SET expires_at = now() - interval '1 minute' WHERE id = %(h)s RETURNING id",
        {"h": hold.id},
    )
    result = await _alliance(db, "jobs", "run", "holds")
    assert result.returncode == 0, result.stderr
    assert "released 1 expired holds" in result.stdout


async def test_jobs_run_settlement(db: Database) -> None:
    result = await _alliance(db, "jobs", "run", "settlement")
    assert result.returncode == 0, result.stderr
    assert "closed 0 settlement periods" in result.stdout


async def test_demo_has_rates_and_an_exchange(db: Database) -> None:
    await seed_demo(db)
    await seed_demo(db)
    data = await ok(db, OPERATOR, "{ exchangeRates { edges { node { rate feePercent } } } }")
    assert len(data["exchangeRates"]["edges"]) == 4
    row = await db.fetch_one("SELECT count(*), sum(points_out) FROM exchange")
    assert row == (1, 392)  # 200 wok points less the 2 % fee (4), at 2 mall points each
