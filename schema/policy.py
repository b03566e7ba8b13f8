"""What every request gets before and after execution: limits, caches, the error policy.

- Parsing within the token limit, cached by query text.
- Validation with the depth and alias limiters (and, in production, no introspection),
  cached by the identity of the cached document.
- Errors as the client sees them: coded, and masked when unexpected (`present`).

These were one strawberry SchemaExtension. Strawberry runs an extension's hooks through
per-request context managers (it wraps each hook in `contextlib.contextmanager` and
inspects it on every request): ~20 % of executing a small query such as the balance
read (bench/inproc.py, 2026-11-26). Here the schema takes the cached document and its
validation (`RequestPolicy.document`) and executes it itself (`AllianceSchema.execute`);
where it leaves the work to strawberry, it fills strawberry's execution context with them
(`prepare`), and strawberry skips both. Either way it presents the errors of each result.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from functools import lru_cache
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql.validation import NoSchemaIntrospectionCustomRule, specified_rules
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext, ExecutionResult

from alliance.config import Settings
from schema.errors import present

STRAWBERRY_RULES = tuple(specified_rules)
"""The rules strawberry validates with (an execution context's `validation_rules`)."""

CACHE_SIZE = 512
"""Distinct documents remembered per process; bounded so unique queries cannot grow memory."""


@lru_cache(maxsize=CACHE_SIZE)
def _parse(query: str, max_tokens: int) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


Validated = tuple[DocumentNode, list[GraphQLError]]
_validated: dict[tuple[int, GraphQLSchema, tuple[Any, ...]], Validated] = {}


def _validate(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    """Validation, remembered by the identity of the document (cached by `_parse`): AST
    nodes hash their whole tree, ~10 µs a request for a small mutation."""
    key = (id(document), schema, rules)
    found = _validated.get(key)
    if found is not None and found[0] is document:
        return found[1]
    errors = validate_document(schema, document, rules)
    if len(_validated) >= CACHE_SIZE:
        _validated.clear()
    _validated[key] = (document, errors)  # the document is kept: its id is not reused
    return errors


class RequestPolicy:
    """The limits of these settings (fixed per process)."""

    def __init__(self, settings: Settings) -> None:
        self.max_tokens = settings.max_tokens
        self.extra_rules: tuple[type[ASTValidationRule], ...] = (
            *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
            *((NoSchemaIntrospectionCustomRule,) if settings.production else ()),
        )
        self._rules: tuple[type[ASTValidationRule], ...] | None = None

    def document(self, schema: GraphQLSchema, query: str) -> Validated | None:
        """The parsed query and its validation errors, from the caches; None when it does
        not parse (strawberry parses it again, within the same token limit, and answers
        the syntax error as usual)."""
        try:
            document = _parse(query, self.max_tokens)
        except GraphQLError:
            return None
        rules = self._rules
        if rules is None:
            # Built once: the validation cache keys on the very same tuple.
            rules = self._rules = (*STRAWBERRY_RULES, *self.extra_rules)
        return document, _validate(schema, document, rules)

    def prepare(self, context: ExecutionContext) -> None:
        """Fill strawberry's execution context from the caches."""
        context.parse_options = {"max_tokens": self.max_tokens}
        if context.query is None or context.graphql_document is not None:
            return
        found = self.document(context.schema._schema, context.query)
        if found is not None:
            context.graphql_document, context.pre_execution_errors = found


def present_result(result: Any) -> Any:
    """The result with its errors as the client sees them (`present`)."""
    if isinstance(result, ExecutionResult) and result.errors:
        result.errors = [present(error) for error in result.errors]
    return result


async def present_each(results: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """A stream's results (strawberry's `stream` is an async generator), each presented."""
    try:
        async for result in results:
            yield present_result(result)
    finally:
        aclose = getattr(results, "aclose", None)
        if aclose is not None:
            await aclose()
