"""The GraphQL schema: thin translation between HTTP clients and the domain."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, ExecutionResult

from alliance.config import Settings
from schema.errors import log_unexpected
from schema.execution import use_short_way
from schema.inputs import build_inputs_by_plan
from schema.mutations import Mutation
from schema.policy import RequestPolicy, present_each, present_result
from schema.queries import Query
from schema.scalars import SCALARS
from schema.subscriptions import Subscription


class AllianceSchema(strawberry.Schema):
    policy: RequestPolicy

    def _create_execution_context(self, *args: Any, **kwargs: Any) -> ExecutionContext:
        context = super()._create_execution_context(*args, **kwargs)
        self.policy.prepare(context)  # parsed and validated from the caches
        return context

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        return present_result(await super().execute(*args, **kwargs))

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        return present_each(await super().stream(*args, **kwargs))

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client errors are answers, not incidents: only unexpected ones are logged.
        log_unexpected(errors)


def create_schema(settings: Settings | None = None) -> AllianceSchema:
    schema = AllianceSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(
            scalar_map=SCALARS,
            disable_field_suggestions=bool(settings and settings.production),
        ),
    )
    schema.policy = RequestPolicy(settings or Settings())
    use_short_way(schema)  # plain data fields without per-field machinery (execution.py)
    build_inputs_by_plan(schema)  # input objects without strawberry's generic walk (inputs.py)
    return schema


def sdl() -> str:
    """The schema as SDL, as exported to schema/schema.graphql."""
    return str(create_schema()) + "\n"
