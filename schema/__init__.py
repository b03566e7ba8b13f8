"""The GraphQL schema: thin translation between HTTP clients and the domain."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from alliance.config import Settings
from schema.errors import log_unexpected
from schema.execution import use_short_way
from schema.extensions import request_policy
from schema.inputs import build_inputs_by_plan
from schema.mutations import Mutation
from schema.queries import Query
from schema.scalars import SCALARS
from schema.subscriptions import Subscription


class AllianceSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client errors are answers, not incidents: only unexpected ones are logged.
        log_unexpected(errors)


def create_schema(settings: Settings | None = None) -> AllianceSchema:
    extensions: list[Any] = [request_policy(settings or Settings())]
    schema = AllianceSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(
            scalar_map=SCALARS,
            disable_field_suggestions=bool(settings and settings.production),
        ),
    )
    use_short_way(schema)  # plain data fields without per-field machinery (execution.py)
    build_inputs_by_plan(schema)  # input objects without strawberry's generic walk (inputs.py)
    return schema


def sdl() -> str:
    """The schema as SDL, as exported to schema/schema.graphql."""
    return str(create_schema()) + "\n"
