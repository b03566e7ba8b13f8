"""The one schema extension every request runs: limits, caches and the error policy.

Strawberry's own ParserCache, ValidationCache, MaxTokensLimiter, the
AddValidationRules limiters and MaskErrors do the same jobs as five extensions;
each costs hook dispatch on every request (and MaskErrors an isinstance check
against a runtime Protocol), which bench/ measured at ~10 % of a small request.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension
from strawberry.schema.schema import validate_document

from alliance.config import Settings
from schema.errors import present

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


def request_policy(settings: Settings) -> type[SchemaExtension]:
    """The extension class for these settings (limits are fixed per process)."""
    max_tokens = settings.max_tokens
    extra_rules: list[type[ASTValidationRule]] = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    if settings.production:
        extra_rules.append(NoSchemaIntrospectionCustomRule)

    class RequestPolicy(SchemaExtension):
        _rules: tuple[type[ASTValidationRule], ...] | None = None

        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            if context.query is not None and context.graphql_document is None:
                context.graphql_document = _parse(context.query, max_tokens)
            yield

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            rules = RequestPolicy._rules
            if rules is None:
                # Built once: the validation cache keys on the very same tuple.
                rules = RequestPolicy._rules = (*context.validation_rules, *extra_rules)
            assert context.graphql_document is not None
            context.pre_execution_errors = _validate(
                context.schema._schema, context.graphql_document, rules
            )
            yield

        def on_operation(self) -> Iterator[None]:
            yield
            result: Any = self.execution_context.result
            if result is not None and result.errors:
                result.errors = [present(error) for error in result.errors]

    return RequestPolicy
