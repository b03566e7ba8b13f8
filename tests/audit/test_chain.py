"""The audit trail: append-only in the database, one hash chain per day, and tampering by
a superuser (triggers off) found by `alliance verify`."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from alliance.audit.verify import AUDIT_CHECKS
from alliance.db.engine import Database
from alliance.ledger.verify import run_checks, verify_ledger
from tests.factories import make_membership, make_program

ZERO = b"\x00" * 32


async def _records(db: Database) -> list[tuple[Any, ...]]:
    return await db.fetch_all(
        "SELECT id, chain_day, chain_seq, previous_hash, hash, action FROM audit_record"
        " ORDER BY chain_day, chain_seq"
    )


async def _as_superuser(db: Database, *statements: str) -> None:
    """What a superuser can do that the application cannot: triggers off for a session."""
    async with db.autocommit() as conn:
        await conn.execute(text("SET session_replication_role = replica"))
        try:
            for statement in statements:
                await conn.execute(text(statement))
        finally:
            await conn.execute(text("SET session_replication_role = DEFAULT"))


async def _audit_violations(db: Database) -> list[str]:
    return [f"{v.check}: {v.detail}" for v in await run_checks(db, AUDIT_CHECKS)]


async def _history(db: Database) -> None:
    program = await make_program(db)
    for _ in range(3):
        await make_membership(db, program)


class TestAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_record SET after = '{\"forged\": true}'",
            "UPDATE audit_record SET hash = previous_hash",
            "DELETE FROM audit_record",
            "DELETE FROM audit_record WHERE id = (SELECT max(id) FROM audit_record)",
        ],
    )
    async def test_changes_are_refused_by_the_database(self, db: Database, statement: str) -> None:
        await _history(db)
        before = await _records(db)
        with pytest.raises(psycopg.DatabaseError, match="append-only") as refused:
            async with db.connection() as conn:
                await conn.execute(statement)
        assert refused.value.sqlstate == "LA500"
        assert await _records(db) == before

    async def test_a_client_cannot_write_outside_the_chain(self, db: Database) -> None:
        """Whatever an INSERT says of the chain, the trigger numbers and hashes it."""
        await _history(db)
        async with db.connection() as conn:
            await conn.execute(
                "INSERT INTO audit_record (actor, role, action, target, created_at, chain_day,"
                " chain_seq, previous_hash, hash) VALUES ('client:x', 'operator', 'forge',"
                " 'nothing', '2001-01-01', '2001-01-01', 1, '\\x00', '\\x00')"
            )
        last = (await _records(db))[-1]
        assert last[5] == "forge"
        assert last[1].year != 2001
        assert last[2] == len(await _records(db))
        assert await _audit_violations(db) == []


class TestChain:
    async def test_records_link_in_order_from_zero(self, db: Database) -> None:
        await _history(db)
        records = await _records(db)
        assert len(records) == 5  # the merchant, the program and three enrolments
        assert [r[2] for r in records] == [1, 2, 3, 4, 5]
        assert records[0][3] == ZERO
        for previous, record in itertools.pairwise(records):
            assert record[3] == previous[4]
        assert all(len(r[4]) == 32 for r in records)
        assert await verify_ledger(db) == []

    async def test_hash_is_sha256_of_previous_and_canonical_content(self, db: Database) -> None:
        await _history(db)
        row = await db.fetch_one(
            "SELECT previous_hash, hash, jsonb_build_array(id, chain_day, chain_seq, actor,"
            " client_id, role, merchant_id, action, target, encode(content_digest, 'hex'),"
            " request_id,"
            " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'))::text,"
            " content_digest, jsonb_build_array(before, after)::text"
            " FROM audit_record ORDER BY id DESC LIMIT 1"
        )
        assert row is not None
        previous, stored, content, digest, documents = row
        assert bytes(digest) == hashlib.sha256(documents.encode()).digest()
        assert stored == hashlib.sha256(bytes(previous) + content.encode()).digest()

    async def test_concurrent_records_form_one_gapless_chain(self, db: Database) -> None:
        program = await make_program(db)
        await asyncio.gather(*(make_membership(db, program) for _ in range(24)))
        records = await _records(db)
        assert [r[2] for r in records] == list(range(1, 27))
        head = await db.fetch_one("SELECT seq, hash FROM audit_chain_head")
        assert head == (26, records[-1][4])
        assert await _audit_violations(db) == []


class TestTampering:
    """A superuser can edit the table; verify finds it, then the repair makes it clean."""

    async def test_edited_content_is_found(self, db: Database) -> None:
        await _history(db)
        target, original = (
            await db.fetch_all(
                "SELECT id, after::text FROM audit_record ORDER BY id LIMIT 1 OFFSET 1"
            )
        )[0]
        await _as_superuser(
            db, f"UPDATE audit_record SET after = '{{\"forged\": 1}}' WHERE id = {target}"
        )
        found = await _audit_violations(db)
        assert len(found) == 1
        assert f"audit record {target} " in found[0]
        assert "changed" in found[0]
        await _as_superuser(
            db, f"UPDATE audit_record SET after = '{original}'::jsonb WHERE id = {target}"
        )
        assert await _audit_violations(db) == []

    async def test_edit_with_a_recomputed_hash_breaks_the_next_link(self, db: Database) -> None:
        await _history(db)
        ids = [r[0] for r in await _records(db)]
        saved = await db.fetch_one(
            "SELECT after::text, encode(hash, 'hex'), encode(content_digest, 'hex')"
            " FROM audit_record WHERE id = %(id)s",
            {"id": ids[1]},
        )
        assert saved is not None
        await _as_superuser(
            db,
            f"UPDATE audit_record SET after = '{{\"forged\": 1}}' WHERE id = {ids[1]}",
            "UPDATE audit_record SET content_digest = audit_content_digest(before, after)"
            f" WHERE id = {ids[1]}",
            f"UPDATE audit_record a SET hash = audit_record_hash(a) WHERE id = {ids[1]}",
        )
        found = await _audit_violations(db)
        assert len(found) == 1
        assert f"audit record {ids[2]} " in found[0]
        assert "does not link" in found[0]
        await _as_superuser(
            db,
            f"UPDATE audit_record SET after = '{saved[0]}'::jsonb,"
            f" hash = decode('{saved[1]}', 'hex'), content_digest = decode('{saved[2]}', 'hex')"
            f" WHERE id = {ids[1]}",
        )
        assert await _audit_violations(db) == []

    async def test_removed_record_is_found(self, db: Database) -> None:
        await _history(db)
        ids = [r[0] for r in await _records(db)]
        async with db.autocommit() as conn:
            await conn.execute(text("SET session_replication_role = replica"))
            await conn.execute(
                text("CREATE TEMP TABLE kept AS SELECT * FROM audit_record WHERE id = :id"),
                {"id": ids[1]},
            )
            await conn.execute(text("DELETE FROM audit_record WHERE id = :id"), {"id": ids[1]})
            await conn.execute(text("SET session_replication_role = DEFAULT"))
            found = await _audit_violations(db)
            assert len(found) == 1
            assert f"audit record {ids[2]} " in found[0]
            assert "records are missing" in found[0]
            await conn.execute(text("SET session_replication_role = replica"))
            await conn.execute(text("INSERT INTO audit_record SELECT * FROM kept"))
            await conn.execute(text("SET session_replication_role = DEFAULT"))
        assert await _audit_violations(db) == []

    async def test_cut_end_is_found(self, db: Database) -> None:
        """The last record removed leaves no gap, but the day's head still names it."""
        await _history(db)
        last = (await _records(db))[-1][0]
        async with db.autocommit() as conn:
            await conn.execute(text("SET session_replication_role = replica"))
            await conn.execute(
                text("CREATE TEMP TABLE kept AS SELECT * FROM audit_record WHERE id = :id"),
                {"id": last},
            )
            await conn.execute(text("DELETE FROM audit_record WHERE id = :id"), {"id": last})
            await conn.execute(text("SET session_replication_role = DEFAULT"))
            found = await _audit_violations(db)
            assert len(found) == 1
            assert "ends at #4 but its head says #5" in found[0]
            await conn.execute(text("SET session_replication_role = replica"))
            await conn.execute(text("INSERT INTO audit_record SELECT * FROM kept"))
            await conn.execute(text("SET session_replication_role = DEFAULT"))
        assert await _audit_violations(db) == []


class TestHotPath:
    async def test_points_movements_never_touch_the_audit_chain(self, db: Database) -> None:
        """Awards and spends write no audit record, so they never wait for the day's
        chain lock (the per-day head row) that audited acts serialise on."""
        from alliance.ledger.service import spend_points
        from tests.factories import give_points, merchant_actor

        program = await make_program(db)
        membership = await make_membership(db, program)
        before = await db.fetch_all("SELECT count(*), max(chain_seq) FROM audit_record")
        head = await db.fetch_all("SELECT chain_day, seq, hash FROM audit_chain_head")
        await give_points(db, membership, program, 10)
        await spend_points(db, merchant_actor(program.merchant_id), membership_id=membership.id,
                           points=3, reason="tea", idempotency_key="hot-1")  # fmt: skip
        assert await db.fetch_all("SELECT count(*), max(chain_seq) FROM audit_record") == before
        assert await db.fetch_all("SELECT chain_day, seq, hash FROM audit_chain_head") == head
