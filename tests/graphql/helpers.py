"""Running GraphQL documents in-process, as a given actor."""

from __future__ import annotations

from typing import Any

from strawberry import relay

from alliance.auth.actor import Actor
from alliance.config import Settings
from alliance.db.engine import Database
from schema import create_schema
from schema.context import Context

_schema = create_schema(Settings())


def gid(type_name: str, pk: int) -> str:
    return str(relay.GlobalID(type_name, str(pk)))


async def run(
    db: Database, actor: Actor | None, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Execute and return {"data": ..., "errors": [...]} like the HTTP response."""
    result = await _schema.execute(
        query, variable_values=variables, context_value=Context(db, db.settings, actor)
    )
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [error.formatted for error in result.errors]
    return out


async def ok(
    db: Database, actor: Actor | None, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Execute and demand no GraphQL errors."""
    result = await run(db, actor, query, variables)
    assert "errors" not in result, result["errors"]
    data: dict[str, Any] = result["data"]
    return data


def error_codes(result: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in result.get("errors", [])]
