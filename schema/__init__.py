"""The GraphQL schema: thin translation between HTTP clients and the domain."""

from __future__ import annotations

from collections.abc import Iterable
from inspect import isawaitable
from typing import Any, cast

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry.execution import optimized_is_awaitable
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.name_converter import NameConverter
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.operation import get_first_operation, get_operation_type

from alliance.config import Settings
from schema.errors import log_unexpected
from schema.execution import release, use_short_way
from schema.inputs import build_inputs_by_plan
from schema.mutations import Mutation
from schema.policy import RequestPolicy, present_each, present_result
from schema.queries import Query
from schema.scalars import SCALARS
from schema.subscriptions import Subscription


class AllianceSchema(strawberry.Schema):
    policy: RequestPolicy
    plain: bool
    """No extension, no directive, no incremental delivery: `execute` takes its own way."""

    def _create_execution_context(self, *args: Any, **kwargs: Any) -> ExecutionContext:
        context = super()._create_execution_context(*args, **kwargs)
        self.policy.prepare(context)  # parsed and validated from the caches
        return context

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """strawberry's `execute`, the same steps without its extension machinery.

        Strawberry runs every request through an extensions runner, four async context
        managers and a middleware manager, built per request even when there is no
        extension (this schema has none, and no directive): ~30 µs a request, a third of
        answering `{ __typename }`. With the document parsed and validated from the
        caches, what remains is: find the operation, check its type, execute, present.
        A query that does not parse, or a schema with extensions, takes strawberry's way.
        """
        found = self.policy.document(self._schema, query) if query and self.plain else None
        if found is None:
            return present_result(
                await super().execute(
                    query, variable_values, context_value, root_value, operation_name,
                    allowed_operation_types, operation_extensions,
                )
            )  # fmt: skip
        document, errors = found
        try:
            operation_type = get_operation_type(document, operation_name)
        except RuntimeError as missing:
            raise CannotGetOperationTypeError(operation_name) from missing
        if allowed_operation_types is None:
            allowed_operation_types = DEFAULT_ALLOWED_OPERATION_TYPES
        # A subscription is served by `subscribe` (graphql-transport-ws): executed as one
        # answer it could only fail, as a masked internal error. Refused like a type the
        # transport does not allow (a 400 over HTTP).
        if (
            operation_type not in allowed_operation_types
            or operation_type is OperationType.SUBSCRIPTION
        ):
            raise InvalidOperationTypeError(operation_type)
        if errors:
            self.process_errors(errors)
            return present_result(ExecutionResult(data=None, errors=errors, extensions={}))
        if operation_name is None:
            # As strawberry: the first operation when none is named (not an error).
            first = get_first_operation(document)
            operation_name = first.name.value if first and first.name else None
        try:
            # graphql-core's `execute` is these two steps, plus a refusal of incremental
            # delivery that a plain schema (no @defer, no @stream) never needs.
            executor = self.execution_context_class.build(
                self._schema, document, root_value, context_value, variable_values,
                operation_name, is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
                operation_extensions=operation_extensions,
            )  # fmt: skip
            if isinstance(executor, list):  # variables that do not coerce, as graphql-core
                result = GraphQLExecutionResult(None, errors=executor)
            else:
                try:
                    outcome = executor.execute_operation()
                    if isawaitable(outcome):
                        outcome = await outcome
                finally:
                    release(executor)
                result = cast(GraphQLExecutionResult, outcome)  # one answer: no @defer here
        except Exception as exc:  # as strawberry: an error of the request, answered
            failure = (
                exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
            )
            self.process_errors([failure])
            return present_result(ExecutionResult(data=None, errors=[failure], extensions={}))
        if result.errors:
            self.process_errors(result.errors)
        return present_result(
            ExecutionResult(data=result.data, errors=result.errors, extensions={})
        )

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        return present_each(await super().stream(*args, **kwargs))

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client errors are answers, not incidents: only unexpected ones are logged.
        log_unexpected(errors)


class RememberedNames(NameConverter):
    """Strawberry camel-cases an argument's or input field's name again at every call
    (~3 µs each: an input of 15 fields paid 45 µs a request); the names are the schema's
    own, few and fixed, so each is converted once."""

    def __init__(self) -> None:
        super().__init__()
        self._converted: dict[str, str] = {}

    def apply_naming_config(self, name: str) -> str:
        converted = self._converted.get(name)
        if converted is None:
            converted = self._converted[name] = super().apply_naming_config(name)
        return converted


def create_schema(settings: Settings | None = None) -> AllianceSchema:
    schema = AllianceSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(
            scalar_map=SCALARS,
            name_converter=RememberedNames(),
            disable_field_suggestions=bool(settings and settings.production),
        ),
    )
    schema.policy = RequestPolicy(settings or Settings())
    schema.plain = not (
        schema.extensions
        or schema.directives
        or schema.config.enable_experimental_incremental_execution
        or schema._schema.get_directive("defer")
        or schema._schema.get_directive("stream")
    )
    use_short_way(schema)  # plain data fields without per-field machinery (execution.py)
    build_inputs_by_plan(schema)  # input objects without strawberry's generic walk (inputs.py)
    return schema


def sdl() -> str:
    """The schema as SDL, as exported to schema/schema.graphql."""
    return str(create_schema()) + "\n"
