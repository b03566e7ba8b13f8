"""The audit chain under concurrent audited writes: `python -m bench.audit_chain`.

Every audited act takes the lock of its day's `audit_chain_head` row from its audit
INSERT to its commit. This measures what that costs the audited acts themselves:
`--acts` enrolments (`enroll_member`, one audit record each) by `--concurrency` clients
at once, with the chain trigger as shipped, then with a trigger that fills the chain
columns without the head row (no lock, no hash), alternating `--repeats` times on one
durable embedded PostgreSQL. Points movements write no audit record and are not
measured here (tests/audit/test_chain.py::TestHotPath checks they never touch it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import psycopg

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db import migrate
from alliance.db.embedded import DURABLE, EmbeddedPostgres
from alliance.db.engine import Database
from alliance.ledger.verify import run_checks
from alliance.members.service import enroll_member
from alliance.programs.service import create_merchant, create_program

OPERATOR = Actor(Role.OPERATOR, "client:bench", "bench")
UNCHAINED = """
CREATE OR REPLACE FUNCTION audit_record_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := now();
    NEW.chain_day := DATE '1999-01-01';
    NEW.chain_seq := NEW.id;
    NEW.previous_hash := '\\x00';
    NEW.hash := '\\x00';
    RETURN NEW;
END $$;
"""


async def enrolments(db: Database, program_id: int, staff: Actor, acts: int, clients: int,
                     tag: str) -> float:  # fmt: skip
    numbers = iter(range(acts))

    async def client() -> None:
        for n in numbers:
            await enroll_member(db, staff, program_id=program_id, member_number=f"{tag}-{n}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return acts / (time.perf_counter() - started)


async def run(
    url: str, libpq: str, settings: Settings, args: argparse.Namespace
) -> dict[str, object]:
    db = Database(url, settings)
    try:
        merchant = await create_merchant(db, OPERATOR, code="audit", name="Audit")
        program = await create_program(db, OPERATOR, merchant_id=merchant.id, code="p", name="P",
                                       unit_name="pt", point_value=Decimal("0.01"))  # fmt: skip
        staff = Actor(Role.MERCHANT, "client:crm", "crm", merchant_id=merchant.id)
        with psycopg.connect(libpq, autocommit=True) as conn:
            shipped = conn.execute(
                "SELECT pg_get_functiondef('audit_record_chain'::regproc)"
            ).fetchone()
        assert shipped is not None
        figures: dict[str, list[float]] = {"chained": [], "unchained": []}
        for r in range(args.repeats):
            for mode in ("chained", "unchained"):
                with psycopg.connect(libpq, autocommit=True) as conn:
                    conn.execute(shipped[0] if mode == "chained" else UNCHAINED)
                rate = await enrolments(db, program.id, staff, args.acts, args.concurrency,
                                        f"{mode}-{r}")  # fmt: skip
                figures[mode].append(round(rate, 1))
                print(f"{mode:10} {rate:8.1f} enrolments/s", flush=True)
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(shipped[0])
        from alliance.audit.verify import AUDIT_CHECKS

        chained_only = tuple(c for c in AUDIT_CHECKS if c.name == "audit_chain")
        violations = await run_checks(db, chained_only)
        return {"acts": args.acts, "concurrency": args.concurrency, "per_second": figures,
                "chain_violations_outside_the_unchained_day": [
                    v.detail for v in violations if "1999-01-01" not in v.detail]}  # fmt: skip
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="alliance-audit-"))
    server = EmbeddedPostgres(scratch / "pg", settings=DURABLE)
    settings = Settings(secret_key="YXVkaXQtY2hhaW4tYmVuY2gtc2VjcmV0LWtleS0zMmI=",
                        data_dir=scratch, session_pool_size=16, access_log=False)  # fmt: skip
    try:
        server.start()
        server.create_database("audit")
        migrate.upgrade(server.url("audit"))
        result = asyncio.run(run(server.url("audit"), server.libpq_url("audit"), settings, args))
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
