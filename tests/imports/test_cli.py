"""`alliance import members|balances`, end to end in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from alliance.audit.models import AuditRecord
from alliance.db.engine import Database
from alliance.programs.models import ExpiryPolicy
from tests.factories import make_program
from tests.imports.helpers import counts


async def _alliance(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "ALLIANCE_DATABASE_URL": db.url,
        "ALLIANCE_SECRET_KEY": db.settings.secret_key or "",
        "ALLIANCE_DATA_DIR": str(db.settings.data_dir),
        "COLUMNS": "200",  # rich wraps tables to the terminal width
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_members_then_balances_then_a_rerun(db: Database, tmp_path: Path) -> None:
    program = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=365)
    members = tmp_path / "members.csv"
    members.write_text("member_number,display_name\nW-1,李娜\nW-2,Wang Wei\n")
    balances = tmp_path / "balances.csv"
    balances.write_text(
        "member_number,points,earned_at\nW-1,1200,2026-01-05T10:00:00+08:00\nW-2,5,\n"
    )

    enrolled = await _alliance(db, "import", "members", str(members), "--program", str(program.id))
    assert enrolled.returncode == 0, enrolled.stderr
    assert "imported 2 members" in enrolled.stdout
    posted = await _alliance(db, "import", "balances", str(balances), "--program", str(program.id))
    assert posted.returncode == 0, posted.stderr
    assert "imported 2 opening balances, 1,205 points" in posted.stdout
    again = await _alliance(db, "import", "balances", str(balances), "--program", str(program.id))
    assert again.returncode == 0, again.stderr
    assert "imported 0 opening balances, 0 points" in again.stdout
    assert "2 already imported, skipped" in again.stdout
    assert (await counts(db))["points"] == 1205

    async with db.autocommit() as conn:
        actors = (
            await conn.execute(
                select(AuditRecord.actor, AuditRecord.client_id, AuditRecord.role).where(
                    AuditRecord.action.like("import.%")
                )
            )
        ).all()
    assert {(client, role) for _, client, role in actors} == {("alliance-cli", "operator")}
    assert all(actor.startswith("cli:") for actor, _, _ in actors)


async def test_a_bad_file_lists_its_errors_and_writes_nothing(db: Database, tmp_path: Path) -> None:
    program = await make_program(db)
    bad = tmp_path / "balances.csv"
    bad.write_text("member_number,points\nNOBODY,10\nX,ten\n")  # X: unknown and not a number
    before = await counts(db)
    result = await _alliance(db, "import", "balances", str(bad), "--program", str(program.id))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "3 error(s) in balances.csv: nothing was imported" in result.stderr
    assert "no member number NOBODY in this program" in result.stderr
    assert "not 'ten'" in result.stderr
    assert await counts(db) == before


async def test_show_limits_the_listed_errors(db: Database, tmp_path: Path) -> None:
    program = await make_program(db)
    bad = tmp_path / "members.csv"
    bad.write_text("member_number,display_name\n" + ",x\n" * 25)
    result = await _alliance(
        db, "import", "members", str(bad), "--program", str(program.id), "--show", "3"
    )
    assert result.returncode == 1
    assert "the first 3 of 25 errors, by line" in result.stderr
    assert result.stderr.count("member_number is empty") == 3


async def test_unknown_program_and_missing_file_fail_cleanly(db: Database, tmp_path: Path) -> None:
    members = tmp_path / "members.csv"
    members.write_text("member_number\nA1\n")
    unknown = await _alliance(db, "import", "members", str(members), "--program", "999999")
    assert unknown.returncode == 2
    assert "no program 999999" in unknown.stderr
    missing = await _alliance(db, "import", "members", str(tmp_path / "nope.csv"), "--program", "1")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    for result in (unknown, missing):
        assert "Traceback" not in result.stderr
