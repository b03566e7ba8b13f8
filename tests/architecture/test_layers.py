"""Structural rules: the domain never imports GraphQL; the SDL file is current;
the models and the migrations describe the same schema."""

from __future__ import annotations

import ast
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from alliance.db.registry import metadata
from schema import sdl

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_does_not_import_graphql_or_http() -> None:
    # alliance/cli.py is the composition root (serve, schema export), so it is exempt.
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in _imports(path)
            if name.split(".")[0] in {"strawberry", "graphql", "starlette", "schema", "gateway"}
        )
        for path in (ROOT / "alliance").rglob("*.py")
        if path.name != "cli.py"
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_exported_schema_is_current() -> None:
    exported = (ROOT / "schema" / "schema.graphql").read_text()
    assert exported == sdl(), "schema/schema.graphql is stale: run `alliance schema export`"


def test_models_match_migrations(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == [], "models and migrations disagree; write a migration"


def test_migrations_round_trip(database_url: str) -> None:
    """Upgrade, downgrade to nothing, upgrade again, on a database of its own."""
    from sqlalchemy.engine import make_url

    from alliance.db import migrate

    url = make_url(database_url)
    scratch = f"{url.database}_migrations"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}"'))
        conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    target = url.set(database=scratch).render_as_string(hide_password=False)
    try:
        migrate.upgrade(target)
        migrate.downgrade(target, "base")
        engine = create_engine(target)
        with engine.connect() as conn:
            leftover = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%'"
                )
            ).scalar()
            functions = conn.execute(
                text(
                    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = 'public'"
                )
            ).scalar()
        engine.dispose()
        assert (leftover, functions) == (0, 0), "downgrade left objects behind"
        migrate.upgrade(target)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()
