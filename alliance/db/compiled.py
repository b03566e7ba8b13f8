"""SQL built with SQLAlchemy, compiled once, run on psycopg.

Queries are written as SQLAlchemy expressions (one definition of each rule,
composable, checked), but compiling one costs more than running it. A
`Compiled` builds and compiles a statement once per *variant* (say, the actor's
role, or whether a cursor was given) and keeps the SQL string; values travel as
named parameters at execution. Constants the expression carries (literals
SQLAlchemy turned into anonymous parameters) are kept with the SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, bindparam
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql import ClauseElement

if TYPE_CHECKING:
    from alliance.auth.actor import Actor

_DIALECT = psycopg_dialect.dialect()


class Compiled:
    def __init__(self, build: Callable[..., ClauseElement]) -> None:
        self._build = build
        self._cache: dict[tuple[Hashable, ...], tuple[str, dict[str, Any]]] = {}

    def __call__(self, *variant: Hashable) -> tuple[str, dict[str, Any]]:
        """The SQL of this variant and its constant parameters."""
        found = self._cache.get(variant)
        if found is None:
            compiled = self._build(*variant).compile(dialect=_DIALECT)
            constants = {
                name: value for name, value in compiled.params.items() if value is not None
            }
            found = self._cache[variant] = (str(compiled), constants)
        return found

    def bind(self, *variant: Hashable, **params: Any) -> tuple[str, Mapping[str, Any]]:
        sql, constants = self(*variant)
        return sql, constants | params if constants else params


# Who is asking, as query parameters: visibility rules compare rows with these,
# and the actor's role (with whether it is bound to a merchant) picks the variant.
ACTOR_MERCHANT = bindparam("actor_merchant", type_=BigInteger)
ACTOR_MEMBER = bindparam("actor_member", type_=BigInteger)


def actor_variant(actor: Actor) -> tuple[Hashable, ...]:
    return (actor.role, actor.merchant_id is not None)


def actor_params(actor: Actor) -> dict[str, Any]:
    return {"actor_merchant": actor.merchant_id, "actor_member": actor.member_id}
