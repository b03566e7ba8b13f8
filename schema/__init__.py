"""The GraphQL schema: thin translation between HTTP clients and the domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from alliance.config import Settings
from schema.errors import ErrorPolicy, log_unexpected
from schema.mutations import Mutation
from schema.queries import Query
from schema.scalars import SCALARS


class AllianceSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client errors are answers, not incidents: only unexpected ones are logged.
        log_unexpected(errors)


def _extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    # Rule classes are built once: the validation cache keys on them, so fresh
    # classes per request would make every request a cache miss.
    rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    if settings.production:
        rules.append(NoSchemaIntrospectionCustomRule)
    max_tokens = settings.max_tokens
    return [
        ErrorPolicy,
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
    ]


def create_schema(settings: Settings | None = None) -> AllianceSchema:
    extensions: list[Any] = _extensions(settings or Settings())
    return AllianceSchema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(
            scalar_map=SCALARS,
            disable_field_suggestions=bool(settings and settings.production),
        ),
    )


def sdl() -> str:
    """The schema as SDL, as exported to schema/schema.graphql."""
    return str(create_schema()) + "\n"
