"""Reading PostgreSQL errors that the domain turns into its own."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def constraint_name(error: DBAPIError) -> str | None:
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None)
