"""Reading PostgreSQL errors that the domain turns into its own."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def constraint_name(error: DBAPIError) -> str | None:
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


def primary_message(error: DBAPIError) -> str:
    diag = getattr(error.orig, "diag", None)
    return str(getattr(diag, "message_primary", None) or error.orig)
