"""Helpers of the migrations that run PL/pgSQL scripts (migrations/sql/)."""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parent / "sql"


def execute(script: str) -> None:
    """Run a script as one simple-protocol execution, untouched by bind parsing."""
    driver = op.get_bind().connection.driver_connection
    assert driver is not None, "migrations run on an open psycopg connection"
    driver.execute(script)


def definition(file: str, name: str) -> str:
    """Function `name` as an earlier migration's script `file` wrote it, as CREATE OR
    REPLACE: what a downgrade restores when a later migration replaced it."""
    script = (SQL_DIR / file).read_text()
    match = re.search(rf"^CREATE FUNCTION {name}\(.*?\$\$.*?\$\$;$", script, re.S | re.M)
    assert match is not None, f"{name} is defined in {file}"
    return match.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
