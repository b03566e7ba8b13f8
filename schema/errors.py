"""How failures reach clients.

- Business rule failures of a mutation: typed `userErrors` in its payload, built
  by `mutate` from the domain error (one helper for every mutation).
- Authentication and authorization, malformed requests, limits: GraphQL
  `errors` with `extensions.code`.
- Anything unexpected: masked as INTERNAL_SERVER_ERROR with the request id,
  and logged once with its traceback under that id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import strawberry
from graphql import GraphQLError
from graphql.error import GraphQLSyntaxError
from psycopg_pool import PoolTimeout as HotPoolTimeout
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from alliance.errors import DomainError, ErrorCode, Forbidden, Unauthenticated
from alliance.logs import request_id_var

log = logging.getLogger("alliance.graphql")

UserErrorCode = strawberry.enum(ErrorCode, name="UserErrorCode")


@strawberry.type(description="A business rule the request broke; nothing was written.")
class UserError:
    code: UserErrorCode  # type: ignore[valid-type]
    message: str
    field: list[str] | None = strawberry.field(
        default=None, description="Path of the input field at fault, if one is."
    )

    @classmethod
    def from_domain(cls, error: DomainError) -> UserError:
        return cls(
            code=error.code,
            message=error.message,
            field=["input", *error.field] if error.field else None,
        )


P = TypeVar("P")


async def mutate(payload: Callable[..., P], use_case: Callable[[], Awaitable[P]]) -> P:
    """Run a mutation's use case; business failures become the payload's userErrors."""
    try:
        return await use_case()
    except (Unauthenticated, Forbidden):
        raise
    except DomainError as error:
        return payload(user_errors=[UserError.from_domain(error)])


def api_error(message: str, code: str, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extensions})


def unauthenticated() -> GraphQLError:
    return api_error("authentication required: send a bearer token", "UNAUTHENTICATED")


def _code_of(error: GraphQLError) -> str | None:
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else None


UNAVAILABLE = "SERVICE_UNAVAILABLE"


def is_unavailable(error: GraphQLError) -> bool:
    """The pool is exhausted or the database is unreachable: retryable, not a bug."""
    original = error.original_error
    return isinstance(
        original, PoolTimeout | HotPoolTimeout | OperationalError | psycopg.OperationalError
    ) or (isinstance(original, DBAPIError) and original.connection_invalidated)


def is_expected(error: GraphQLError) -> bool:
    """Errors whose message is written for clients; everything else is masked."""
    original = error.original_error
    return original is None or isinstance(original, (DomainError, GraphQLError))


def present(error: GraphQLError) -> GraphQLError:
    """The error as the client sees it: coded, and masked when unexpected."""
    if is_expected(error):
        return with_code(error)
    request_id = request_id_var.get()
    if is_unavailable(error):
        message = "the service is busy or its database is unavailable; retry shortly"
        code = UNAVAILABLE
    else:
        message, code = f"internal error (request id {request_id})", "INTERNAL_SERVER_ERROR"
    return GraphQLError(
        message, nodes=error.nodes, path=error.path,
        extensions={"code": code, "requestId": request_id},
    )  # fmt: skip


def with_code(error: GraphQLError) -> GraphQLError:
    """Give the error an `extensions.code` if it has none (in place)."""
    if _code_of(error) is not None:
        return error
    original = error.original_error
    extensions = dict(error.extensions or {})
    if isinstance(original, DomainError):
        extensions["code"] = original.code.value
        if original.field:
            extensions["field"] = list(original.field)
    elif isinstance(original, GraphQLSyntaxError) or isinstance(error, GraphQLSyntaxError):
        extensions["code"] = "GRAPHQL_PARSE_FAILED"
    elif error.path is None:
        extensions["code"] = "GRAPHQL_VALIDATION_FAILED"
    else:
        extensions["code"] = "BAD_REQUEST"
    error.extensions = extensions
    return error


def log_unexpected(errors: list[GraphQLError]) -> None:
    for error in errors:
        if is_unavailable(error):
            log.warning("database unavailable: %s", error.original_error)
        elif not is_expected(error):
            original = error.original_error
            log.error(
                "unexpected error in %s",
                ".".join(str(part) for part in error.path or ()),
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )
