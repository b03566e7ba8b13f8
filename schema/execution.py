"""Field execution without per-field machinery for plain data.

graphql-core runs every field of an answer through the same steps: build a resolve
info, call the field's resolver (strawberry's, which reads the attribute), check for an
awaitable, then complete the value through the non-null, list, leaf and object cases,
each field with its own path. For a field that strawberry resolves by reading the
attribute of the same name (a "basic" field: no resolver, no argument, no extension, no
permission) all of that amounts to `getattr`, and for a leaf the scalar's
`coerce_output_value`; the machinery costs ~3 µs a field, ~5 µs an object. In a list
answer such as `allianceBalances` (a connection of five lines of four fields, see
bench/RESULTS.md) that is most of the time spent in Python.

This execution context takes a short way:
- for an object whose selected fields are all basic (leaves, objects and lists of them,
  to any depth, `__typename` included): one plain loop over a plan of the selection,
  made once per selection (and kept across requests when the document has no
  directive, so that the selection depends on the cached document alone);
- for an operation of one root field (a mutation and its payload, a viewer and her
  membership), the same plans with fields that have resolvers too: each resolver is
  called as graphql-core calls it (strawberry's wrapper, permissions and all), and
  awaitable values are awaited concurrently, as graphql-core does;
- for a basic leaf field among others (beside a resolver): getattr and coerce.

A relay Node's `id`, where strawberry resolves it the stock way (no `resolve_id` or
`resolve_typename` of the type's own), counts as a basic leaf too: the global id of the
type's name and the id attribute, which is what `Node._id` and the ID scalar make of it.

Identical answers: the short way only ever returns what the long way would. Anything
else (a null where the type says non-null, an awaitable, a value a scalar refuses, an
exception, a directive, a deferred fragment, an abstract type, a type with `is_type_of`)
takes the long way for the whole object or field, from its start, which produces the
usual value or error. In the one-root-field way, the long way is the whole operation,
with the outcome of every resolver that has run replayed in place of calling it again.
"""

from __future__ import annotations

import inspect
from asyncio import gather
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from types import CoroutineType, GeneratorType
from typing import Any, ClassVar, TypeGuard, TypeVar, cast

import strawberry
from graphql import (
    ArgumentNode,
    FieldNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    ListValueNode,
    MiddlewareManager,
    ObjectFieldNode,
    ObjectValueNode,
    OperationType,
    VariableNode,
    is_leaf_type,
)
from graphql.execution import Executor, default_field_resolver, default_type_resolver
from graphql.execution.collect_fields import collect_fields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, Undefined
from graphql.type import assert_valid_schema
from strawberry import relay
from strawberry.exceptions import (
    PermissionReturnedAwaitableInSyncContextError,
    PermissionReturnedNonBooleanError,
)
from strawberry.permission import PermissionExtension
from strawberry.relay.utils import to_base64
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter, get_arguments
from strawberry.types.base import StrawberryOptional
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField

from schema.variables import Prepared, prepare

# The graphql-core internals relied on below; with another graphql-core whose methods
# differ, the stock execution context is used (and tests/graphql/test_execution.py fails).
_EXPECTED = {
    "execute_field": ["self", "parent_type", "source", "field_details_list", "path",
                      "position_context"],
    "execute_fields": ["self", "parent_type", "source_value", "path", "grouped_field_set",
                       "position_context"],
    "collect_subfields": ["self", "return_type", "field_details_list"],
    "execute_operation": ["self", "serially"],
    "build_resolve_info": ["self", "field_def", "field_nodes", "parent_type", "path"],
    "build_response": ["self", "data"],
    "finish": ["self", "result"],
    "__init__": ["self", "schema", "fragment_definitions", "fragments", "root_value",
                 "context_value", "operation", "variable_values", "field_resolver",
                 "type_resolver", "subscribe_field_resolver", "enable_early_execution",
                 "middleware_manager", "is_awaitable", "is_async_iterable",
                 "hide_suggestions", "abort_signal", "hooks"],
    "build": ["schema", "document", "root_value", "context_value", "raw_variable_values",
              "operation_name", "field_resolver", "type_resolver", "subscribe_field_resolver",
              "max_coercion_errors", "enable_early_execution", "middleware", "is_awaitable",
              "is_async_iterable", "hide_suggestions", "abort_signal", "hooks",
              "custom_args"],
}  # fmt: skip
_EXPECTED_FUNCTIONS: dict[Callable[..., Any], list[str]] = {
    collect_fields: ["schema", "fragments", "variable_values", "runtime_type", "operation",
                     "hide_suggestions"],
    get_argument_values: ["type_def", "node", "variable_values", "fragment_variable_values",
                          "hide_suggestions"],
}  # fmt: skip
SUPPORTED = all(
    list(inspect.signature(getattr(Executor, name)).parameters) == parameters
    for name, parameters in _EXPECTED.items()
) and all(
    list(inspect.signature(function).parameters)[: len(parameters)] == parameters
    for function, parameters in _EXPECTED_FUNCTIONS.items()
)

# Plan entries: (response key, kind, attribute, nullable, then per kind:)
LEAF = 0  # coerce
TYPENAME = 1  # the type's name
OBJECT = 2  # the object's Planned
LEAF_LIST = 3  # items nullable, coerce
OBJECT_LIST = 4  # items nullable, the items' Planned
RESOLVED = 5  # (the entry completing its value, the field node, the parent type)
Plan = tuple[tuple[Any, ...], ...]
Planned = tuple[Plan, type | None, bool]
"""An object's plan, the class a relay node's value must have (or None), and whether a
resolver is planned anywhere below: only then do its objects and fields get their
paths (a resolver's `info.path`, and the replay of outcomes, need them)."""


def _planned(plan: Plan, origin: type | None) -> Planned:
    return (plan, origin, any(_resolves(entry) for entry in plan))


def _resolves(entry: tuple[Any, ...]) -> bool:
    kind = entry[1]
    if kind == RESOLVED:
        return True
    if kind == OBJECT:
        return bool(entry[4][2])
    if kind == OBJECT_LIST:
        return bool(entry[5][2])
    return False


class _LongWay(Exception):
    """The short way does not apply to this value: execute it the usual way."""


_NEVER_AWAITABLE = frozenset({int, str, bool, float, Decimal, datetime})
"""Exactly these types (not subclasses, which could define `__await__`) need no check."""


_AWAITLESS: dict[type, bool] = {}
"""Classes by whether no instance of theirs can be awaitable (`_awaitless`)."""


def _awaitless(cls: type) -> bool:
    """Whether graphql-core's `is_awaitable` is false for every instance of `cls` without
    an `__await__` of its own: no coroutine nor generator, no `__await__`, and attributes
    looked up the plain way (a `__getattr__` could make one up). Checking each object
    cost ~1 µs; a connection's page has a dozen."""
    found = (
        not issubclass(cls, CoroutineType | GeneratorType)
        and not hasattr(cls, "__await__")
        and not hasattr(cls, "__getattr__")
        and cls.__getattribute__ is object.__getattribute__
    )
    if len(_AWAITLESS) < 4096:  # the schema's classes, and whatever resolvers return
        _AWAITLESS[cls] = found
    return found


async def _later(value: Any, raised: bool) -> Any:
    """An outcome replayed as the awaitable it was (see `_replayed`)."""
    if raised:
        raise value
    return value


def _unwrap(graphql_type: GraphQLOutputType) -> tuple[GraphQLOutputType, bool]:
    if isinstance(graphql_type, GraphQLNonNull):
        return graphql_type.of_type, False
    return graphql_type, True


Leaf = tuple[str, Callable[[Any], Any], bool]
"""A basic leaf field: its attribute, its scalar's output coercion, nullable."""


def basic_fields(schema: GraphQLSchema) -> tuple[dict[int, str], dict[int, Leaf]]:
    """The basic fields of `schema` (their attributes), and among them the leaves, by id
    of their GraphQLField."""
    basic: dict[int, str] = {}
    leaves: dict[int, Leaf] = {}
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field in graphql_type.fields.values():
            node_id = _relay_id(graphql_type, field)
            if node_id is not None:
                basic[id(field)] = node_id[0]
                leaves[id(field)] = node_id
                continue
            # strawberry marks the resolver of a basic field (it reads the attribute).
            if not getattr(field.resolve, "_is_default", False) or field.args:
                continue
            definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if (
                not isinstance(definition, StrawberryField)
                or not definition.is_basic_field
                or type(definition).get_result is not StrawberryField.get_result
            ):
                continue
            basic[id(field)] = definition.python_name
            inner, nullable = _unwrap(field.type)
            if is_leaf_type(inner):
                leaves[id(field)] = (definition.python_name, inner.coerce_output_value, nullable)
    return basic, leaves


DirectCall = Callable[[Any, Any, dict[str, Any]], Any]
"""(source, graphql-core's info, arguments) -> the resolver's value"""


def direct_calls(schema: strawberry.Schema) -> dict[int, DirectCall]:
    """For each field with a resolver, and no field extension but a permission check, the
    call that strawberry's wrapper makes, without the wrapper: strawberry's `Info`, its
    argument conversion, the permissions, then `get_result`. The wrapper's own layers (a
    chain of extension closures, and two or three coroutines around an async resolver's)
    cost ~4 µs a field. By id of the GraphQLField; none at all when the schema handles
    exceptions per field (strawberry's wrapper does that)."""
    converter = schema.schema_converter
    if getattr(converter, "_exception_handler_specs", True):
        return {}
    config, scalars = converter.config, converter.scalar_registry
    calls: dict[int, DirectCall] = {}
    for graphql_type in schema._schema.type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType):
            continue
        for field in graphql_type.fields.values():
            definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            if (
                not isinstance(definition, StrawberryField)
                or definition.base_resolver is None
                or definition.is_subscription
            ):
                continue
            extensions = definition.extensions
            if not extensions:
                calls[id(field)] = _direct_call(definition, config, scalars, None)
            elif len(extensions) == 1 and _plain_permissions(extensions[0]):
                permission = cast(PermissionExtension, extensions[0])
                calls[id(field)] = _direct_call(definition, config, scalars, permission)
    return calls


def _plain_permissions(extension: Any) -> bool:
    """strawberry's own permission check, raising when refused, with permissions that
    answer at once (not `async def`)."""
    return (
        type(extension) is PermissionExtension
        and not extension.fail_silently
        and not any(
            inspect.iscoroutinefunction(permission.has_permission)
            for permission in extension.permissions
        )
    )


def _direct_call(
    field: StrawberryField, config: Any, scalars: Any, permission: PermissionExtension | None
) -> DirectCall:
    info_class = config.info_class
    resolver = field.base_resolver
    assert resolver is not None
    arguments_of = _arguments_of(field, resolver, config, scalars)

    def call(source: Any, info: Any, arguments: dict[str, Any]) -> Any:
        strawberry_info = info_class(_raw_info=info, _field=field)
        args, kwargs = arguments_of(source, strawberry_info, arguments)
        return field.get_result(source, info=strawberry_info, args=args, kwargs=kwargs)

    if permission is None:
        return call
    checks = permission.permissions
    is_async = field.is_async

    def permitted_call(source: Any, info: Any, arguments: dict[str, Any]) -> Any:
        # As PermissionExtension.resolve(_async): each permission asked with the field's
        # arguments (without `info`), then the resolver; a refusal raises, from the
        # awaitable for an async field, as strawberry's coroutine would.
        strawberry_info = info_class(_raw_info=info, _field=field)
        args, kwargs = arguments_of(source, strawberry_info, arguments)
        asked = {name: value for name, value in kwargs.items() if name != "info"}
        for index, check in enumerate(checks):
            allowed = check.has_permission(source, strawberry_info, **asked)
            if is_async and inspect.isawaitable(allowed):  # strawberry awaits it
                return _permitted_later(
                    allowed, checks[index:], source, strawberry_info, asked,
                    lambda: field.get_result(source, info=strawberry_info, args=args,
                                             kwargs=kwargs),
                )  # fmt: skip
            try:
                _check_permission(check, allowed, is_async)
            except Exception as refused:
                if is_async:
                    return _later(refused, True)
                raise
        return field.get_result(source, info=strawberry_info, args=args, kwargs=kwargs)

    return permitted_call


def _check_permission(check: Any, allowed: Any, is_async: bool) -> None:
    """Raises as PermissionExtension does for a permission's answer `allowed`."""
    if not isinstance(allowed, bool):
        awaitable = inspect.isawaitable(allowed)
        if inspect.iscoroutine(allowed):
            allowed.close()
        if awaitable and not is_async:
            raise PermissionReturnedAwaitableInSyncContextError(check)
        raise PermissionReturnedNonBooleanError(check, allowed)
    if not allowed:
        check.on_unauthorized()  # raises: fail_silently is not taken here


async def _permitted_later(
    allowed: Any, checks: list[Any], source: Any, info: Any, asked: dict[str, Any],
    resolve: Callable[[], Any],
) -> Any:  # fmt: skip
    """The rest of an async field's permission checks once one answered with an
    awaitable, then its resolver, as PermissionExtension.resolve_async."""
    _check_permission(checks[0], await allowed, True)
    for check in checks[1:]:
        answer = check.has_permission(source, info, **asked)
        _check_permission(check, (await answer) if inspect.isawaitable(answer) else answer, True)
    value = resolve()
    return (await value) if inspect.isawaitable(value) else value


def _arguments_of(
    field: StrawberryField, resolver: Any, config: Any, scalars: Any
) -> Callable[[Any, Any, dict[str, Any]], tuple[list[Any], dict[str, Any]]]:
    """`get_arguments` for `field`: strawberry's, or, for arguments that its conversion
    returns as they are, the same result built directly (~8 µs a field). Those are ints,
    strings, booleans and floats, and null for any nullable type (`Maybe` aside, which
    wraps it): an optional id or input that a request leaves out costs no conversion."""

    def converted(
        source: Any, info: Any, arguments: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        return get_arguments(
            field=field, source=source, info=info, kwargs=arguments, config=config,
            scalar_registry=scalars,
        )  # fmt: skip

    if not all(
        _plain_argument(argument.type) or type(argument.type) is StrawberryOptional
        for argument in field.arguments
    ):
        return converted

    names = [(config.name_converter.from_argument(a), a.python_name) for a in field.arguments]
    takes_self = resolver.self_parameter is not None
    sources = [p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p]
    info_name = None if resolver.info_parameter is None else resolver.info_parameter.name

    def plain(
        source: Any, info: Any, arguments: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        kwargs = {python: arguments[name] for name, python in names if name in arguments}
        for name in sources:
            kwargs[name] = source
        if info_name is not None:
            kwargs[info_name] = info
        return [source] if takes_self else [], kwargs

    # Nullable arguments of other types: converted by strawberry when they carry a value.
    converting = [
        name
        for (name, _), argument in zip(names, field.arguments, strict=True)
        if not _plain_argument(argument.type)
    ]
    if not converting:
        return plain

    def plain_unless_given(
        source: Any, info: Any, arguments: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        for name in converting:
            if arguments.get(name) is not None:
                return converted(source, info, arguments)
        return plain(source, info, arguments)

    return plain_unless_given


_PLAIN_ARGUMENTS = (int, str, bool, float)


def _plain_argument(type_: Any) -> bool:
    if type(type_) is StrawberryOptional:  # not StrawberryMaybe, which wraps its value
        type_ = type_.of_type
    return type_ in _PLAIN_ARGUMENTS


def _relay_id(graphql_type: GraphQLObjectType, field: Any) -> Leaf | None:
    """A relay Node's `id` that strawberry resolves the stock way, as a leaf: the global
    id of the type's name and the id attribute (what `Node._id` makes, serialized). The
    plain ids of a list of twenty nodes cost about as much as the rest of the page."""
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolver = getattr(definition, "base_resolver", None)
    wrapped = getattr(getattr(resolver, "wrapped_func", None), "__func__", None)
    if (
        not isinstance(definition, StrawberryField)
        or wrapped is not _NODE_ID
        or field.args
        or definition.extensions
        or type(definition).get_result is not StrawberryField.get_result
    ):
        return None
    # The concrete type's class (the field's own origin is the Node interface).
    origin = getattr(
        graphql_type.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF), "origin", None
    )
    if (
        not isinstance(origin, type)
        or not issubclass(origin, relay.Node)
        or origin.resolve_id.__func__ is not _RESOLVE_ID  # type: ignore[attr-defined]
        or origin.resolve_typename.__func__ is not _RESOLVE_TYPENAME  # type: ignore[attr-defined]
    ):
        return None
    type_name = graphql_type.name

    def global_id(value: Any) -> str:
        return to_base64(type_name, str(value))

    return (origin.resolve_id_attr(), global_id, False)


_NODE_ID = relay.Node._id.__func__
_RESOLVE_ID = relay.Node.resolve_id.__func__  # type: ignore[attr-defined]
_RESOLVE_TYPENAME = relay.Node.resolve_typename.__func__  # type: ignore[attr-defined]


def _plain_object(graphql_type: Any, checked: dict[int, type]) -> TypeGuard[GraphQLObjectType]:
    """An object type whose values need no check (no `is_type_of`), or only strawberry's
    (`checked`, see `checked_types`)."""
    return isinstance(graphql_type, GraphQLObjectType) and (
        graphql_type.is_type_of is None or id(graphql_type) in checked
    )


def checked_types(schema: GraphQLSchema) -> dict[int, type]:
    """The object types whose `is_type_of` is the one strawberry makes for a type with
    interfaces (every relay Node), by id: their classes.

    Strawberry's check is "not cast to another type, and an instance of the class (or of
    one of its interfaces' classes)". The short way checks a value's class is exactly the
    type's own and that it carries no cast, which that check accepts; anything else takes
    the long way, where graphql-core runs the check itself.
    """
    checked: dict[int, type] = {}
    for graphql_type in schema.type_map.values():
        check = getattr(graphql_type, "is_type_of", None)
        if (
            not isinstance(graphql_type, GraphQLObjectType)
            or check is None
            or getattr(check, "__module__", None) != GraphQLCoreConverter.__module__
            or not check.__qualname__.endswith("_get_is_type_of.<locals>.is_type_of")
        ):
            continue
        definition = graphql_type.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        origin = getattr(definition, "origin", None)
        if isinstance(origin, type) and getattr(definition, "concrete_of", None) is None:
            checked[id(graphql_type)] = origin
    return checked


SHARED_PLANS = 1024
_SHARED: dict[tuple[Any, ...], tuple[Any, Plan | None]] = {}
"""Plans of directive-free documents, across requests (documents are cached, see
extensions.py): by the type and the field nodes of the selection."""
_STATIC: dict[Any, tuple[Any, bool]] = {}

T = TypeVar("T")


def remembered(cache: dict[Any, tuple[Any, T]], key: Any, node: Any, make: Callable[[], T]) -> T:
    """What `make` works out for a cached document's `node`, once: remembered by `key`
    (built on the node's id) with the node itself, kept so that its id is not reused.
    Bounded: the cache starts over when it holds SHARED_PLANS entries."""
    found = cache.get(key)
    if found is not None and found[0] is node:
        return found[1]
    value = make()
    if len(cache) >= SHARED_PLANS:
        cache.clear()
    cache[key] = (node, value)
    return value


_LITERAL_ARGUMENTS: dict[int, tuple[FieldNode, Any, dict[str, Any] | None]] = {}
"""Coerced arguments by id of their field node (kept, so that its id is not reused);
None for a node whose arguments are coerced at every request."""

_IMMUTABLE = frozenset({int, str, bool, float, Decimal, type(None)})


def _uses_variables(node: Any) -> bool:
    """Whether a variable appears anywhere in the node's arguments."""
    if isinstance(node, VariableNode):
        return True
    if isinstance(node, FieldNode | ArgumentNode | ObjectFieldNode):
        children: Any = (node.arguments or ()) if isinstance(node, FieldNode) else [node.value]
    elif isinstance(node, ListValueNode | ObjectValueNode):
        children = (node.values if isinstance(node, ListValueNode) else node.fields) or ()
    else:
        return False
    return any(_uses_variables(child) for child in children)


def _static(operation: Any, fragments: Any) -> bool:
    """Whether the operation and its fragments have no directive, so that what is
    selected (and so a plan) depends on the document only, not on variables."""
    return remembered(
        _STATIC, id(operation), operation,
        lambda: not any(_has_directive(node) for node in (operation, *fragments.values())),
    )  # fmt: skip


def _has_directive(node: Any) -> bool:
    if getattr(node, "directives", None):
        return True
    selection_set = getattr(node, "selection_set", None)
    if selection_set is None:
        return False
    return any(_has_directive(selection) for selection in selection_set.selections)


Root = tuple[GraphQLObjectType, Any, Any, str, Planned]
"""An operation of one root field whose answer is plain data: the root type, the field,
its field details, its response key, and the plan of its answer (with the class that a
relay node's value must have)."""


class AllianceExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """strawberry's execution context, with the short way for plain data."""

    basic: ClassVar[dict[int, str]] = {}
    leaves: ClassVar[dict[int, Leaf]] = {}
    checked: ClassVar[dict[int, type]] = {}
    direct: ClassVar[dict[int, DirectCall]] = {}
    roots: ClassVar[dict[Any, tuple[Any, Root | None]]] = {}
    prepared: ClassVar[dict[Any, tuple[Any, Prepared | None]]] = {}
    """All six set per schema by `use_short_way` (`roots` by id of the operation node,
    `prepared` by id of the document and the operation's name)."""

    @classmethod
    def build(
        cls,
        schema: GraphQLSchema,
        document: Any,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        field_resolver: Any = None,
        type_resolver: Any = None,
        subscribe_field_resolver: Any = None,
        max_coercion_errors: int = 50,
        enable_early_execution: bool = False,
        middleware: Any = None,
        is_awaitable: Any = None,
        is_async_iterable: Any = None,
        hide_suggestions: bool = False,
        abort_signal: Any = None,
        hooks: Any = None,
        **custom_args: Any,
    ) -> Any:
        """graphql-core's `build`, with the operation, its fragments and the plan of its
        variables worked out once per cached document (schema/variables.py); whatever
        the plan does not take is built by graphql-core from the start."""
        prepared = (
            None if middleware is not None else cls._prepare(schema, document, operation_name)
        )
        variables = None if prepared is None else prepared.coerce(raw_variable_values or {})
        if prepared is None or variables is None:
            return super().build(
                schema, document, root_value, context_value, raw_variable_values,
                operation_name, field_resolver, type_resolver, subscribe_field_resolver,
                max_coercion_errors, enable_early_execution, middleware, is_awaitable,
                is_async_iterable, hide_suggestions=hide_suggestions,
                abort_signal=abort_signal, hooks=hooks, **custom_args,
            )  # fmt: skip
        assert_valid_schema(schema)
        return cls(
            schema, prepared.fragment_definitions, prepared.fragments, root_value,
            context_value, prepared.operation, variables,
            field_resolver or default_field_resolver, type_resolver or default_type_resolver,
            subscribe_field_resolver or default_field_resolver, enable_early_execution,
            None, is_awaitable, is_async_iterable, hide_suggestions=hide_suggestions,
            abort_signal=abort_signal, hooks=hooks, **custom_args,
        )  # fmt: skip

    @classmethod
    def _prepare(
        cls, schema: GraphQLSchema, document: Any, operation_name: str | None
    ) -> Prepared | None:
        return remembered(
            cls.prepared, (id(document), operation_name), document,
            lambda: prepare(schema, document, operation_name),
        )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Plans by id of the selection (graphql-core memoises selections per request;
        # each is kept alive here with its plan, so that its id is not reused).
        self._plans: dict[tuple[int, bool], tuple[Any, Plan | None]] = {}
        # The one-root-field way's resolvers: their outcomes (by path), and the awaitable
        # values not yet settled (with where their completed values go).
        self._outcomes: list[tuple[Any, Any, bool, bool]] = []
        """(path, value or error, raised, awaited)"""
        self._pending: list[tuple[Any, ...]] = []
        self._dropped: list[tuple[Any, ...]] = []
        self._failed = False
        # strawberry passes a middleware manager on every request, empty unless an
        # extension resolves fields: then every field goes through it, the long way.
        middleware = self.middleware_manager
        self._short = middleware is None or not middleware.middlewares
        self._static = self._short and _static(self.operation, self.fragments)

    # ------------------------------------------------------------------ plans

    def _plan(
        self, parent_type: GraphQLObjectType, grouped_field_set: Any, resolving: bool = False
    ) -> Plan | None:
        """The plan of a selection, or None. `resolving`: fields with resolvers may be
        in it (for the one-root-field way, which can replay what they did; see
        `_replayed`); otherwise basic fields only."""
        key = (id(grouped_field_set), resolving)
        found = self._plans.get(key)
        if found is not None:
            return found[1]
        self._plans[key] = (grouped_field_set, None)  # also guards against recursion
        selection = self._plain_selection(parent_type, grouped_field_set, resolving)
        if selection is None:
            return None
        if self._static:
            # The same selection of the same (cached) document: the same plan.
            shared = _SHARED.get(selection)
            if shared is not None:
                self._plans[key] = (grouped_field_set, shared[1])
                return shared[1]
        plan = self._make_plan(parent_type, grouped_field_set, resolving)
        self._plans[key] = (grouped_field_set, plan)
        if self._static:
            if len(_SHARED) >= SHARED_PLANS:
                _SHARED.clear()
            # The nodes are kept with the plan, so that their ids are not reused.
            _SHARED[selection] = (grouped_field_set, plan)
        return plan

    def _plain_selection(
        self, parent_type: GraphQLObjectType, grouped_field_set: Any, resolving: bool
    ) -> tuple[Any, ...] | None:
        """The type and the field nodes of a selection of basic fields only (or, when
        `resolving`, of fields with resolvers too), without a directive, each once; or
        None."""
        fields, basic = parent_type.fields, self.basic
        selection: list[Any] = [resolving, parent_type]
        for field_details_list in grouped_field_set.values():
            if len(field_details_list) > 1:
                return None
            details = field_details_list[0]
            node = details.node
            if (
                node.directives
                or details.defer_usage is not None
                or details.fragment_variable_values is not None
            ):
                return None
            name = node.name.value
            if name != "__typename":
                field = fields.get(name)
                if field is None or (id(field) not in basic and not resolving):
                    return None
            selection.append(id(node))
        return tuple(selection)

    def _make_plan(
        self, parent_type: GraphQLObjectType, grouped_field_set: Any, resolving: bool
    ) -> Plan | None:
        """The plan of a selection that `_plain_selection` accepted."""
        entries: list[tuple[Any, ...]] = []
        for response_key, field_details_list in grouped_field_set.items():
            name = field_details_list[0].node.name.value
            if name == "__typename":
                entries.append((response_key, TYPENAME, None, False, parent_type.name))
                continue
            field = parent_type.fields[name]
            leaf = self.leaves.get(id(field))
            if leaf is not None:  # its own coercion (a relay id's is not its scalar's)
                entries.append((response_key, LEAF, leaf[0], leaf[2], leaf[1]))
                continue
            attribute = self.basic.get(id(field))
            entry = self._entry(response_key, attribute, field.type, field_details_list, resolving)
            if entry is None:
                return None
            if attribute is None:  # a field with a resolver: called, then completed as planned
                if field.resolve is None:
                    return None
                node = field_details_list[0].node
                entry = (response_key, RESOLVED, field, entry[3], (entry, node, parent_type))
            entries.append(entry)
        return tuple(entries)

    def _entry(
        self,
        response_key: str,
        attribute: str | None,
        field_type: Any,
        field_details_list: Any,
        resolving: bool,
    ) -> tuple[Any, ...] | None:
        inner, nullable = _unwrap(field_type)
        if is_leaf_type(inner):
            return (response_key, LEAF, attribute, nullable, inner.coerce_output_value)
        checked = self.checked
        if _plain_object(inner, checked):
            plan = self._sub_plan(inner, field_details_list, resolving)
            if plan is None:
                return None
            return (
                response_key,
                OBJECT,
                attribute,
                nullable,
                _planned(plan, checked.get(id(inner))),
            )
        if isinstance(inner, GraphQLList):
            item, items_nullable = _unwrap(inner.of_type)
            if is_leaf_type(item):
                return (response_key, LEAF_LIST, attribute, nullable, items_nullable,
                        item.coerce_output_value)  # fmt: skip
            if _plain_object(item, checked):
                plan = self._sub_plan(item, field_details_list, resolving)
                if plan is not None:
                    return (response_key, OBJECT_LIST, attribute, nullable, items_nullable,
                            _planned(plan, checked.get(id(item))))  # fmt: skip
        return None

    def _sub_plan(
        self, object_type: GraphQLObjectType, field_details_list: Any, resolving: bool = False
    ) -> Plan | None:
        collected = self.collect_subfields(object_type, field_details_list)
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            return None
        return self._plan(object_type, collected.grouped_field_set, resolving)

    # ------------------------------------------------------------------ the short way

    def _run(self, plan: Plan, source: Any, path: Any = None) -> dict[str, Any]:
        """The completed object, or _LongWay. `path` (the object's), with the plans of
        the one-root-field way only, where fields with resolvers may be planned."""
        results: dict[str, Any] = {}
        for entry in plan:
            response_key, kind, attribute, nullable = entry[:4]
            if kind == TYPENAME:
                results[response_key] = entry[4]
                continue
            if kind == RESOLVED:
                results[response_key] = self._resolve(entry, source, path, results)
                continue
            value = getattr(source, attribute)
            if value is None:
                if not nullable:
                    raise _LongWay
                results[response_key] = None
            elif kind == LEAF:  # the commonest: without the call of `_complete`
                results[response_key] = self._leaf(value, entry[4])
            else:
                results[response_key] = self._complete(
                    entry, value, None if path is None else Path(path, response_key, None)
                )
        return results

    def _complete(self, entry: tuple[Any, ...], value: Any, path: Any) -> Any:
        """A planned field's value (not None), completed; `path` is the field's."""
        kind = entry[1]
        if kind == LEAF:
            return self._leaf(value, entry[4])
        if kind == OBJECT:
            return self._object(value, entry[4], path)
        if type(value) is not list and type(value) is not tuple:
            raise _LongWay
        items_nullable, inner = entry[4], entry[5]
        items: list[Any] = []
        if kind == LEAF_LIST:
            for item in value:
                if item is None:
                    if not items_nullable:
                        raise _LongWay
                    items.append(None)
                else:
                    items.append(self._leaf(item, inner))
            return items
        for index, item in enumerate(value):
            if item is None:
                if not items_nullable:
                    raise _LongWay
                items.append(None)
            else:
                items.append(
                    self._object(item, inner, None if path is None else Path(path, index, None))
                )
        return items

    def _leaf(self, value: Any, coerce: Callable[[Any], Any]) -> Any:
        if type(value) not in _NEVER_AWAITABLE and self.is_awaitable(value):
            raise _LongWay
        coerced = coerce(value)
        if coerced is None or coerced is Undefined:
            raise _LongWay
        return coerced

    def _object(self, value: Any, planned: Planned, path: Any = None) -> dict[str, Any]:
        plan, origin, resolves = planned
        if origin is not None and (
            type(value) is not origin or getattr(value, TYPE_CAST_ATTRIBUTE, None) is not None
        ):
            raise _LongWay  # graphql-core runs strawberry's is_type_of
        awaitless = _AWAITLESS.get(type(value))
        if awaitless is None:
            awaitless = _awaitless(type(value))
        if (not awaitless or "__await__" in getattr(value, "__dict__", ())) and self.is_awaitable(
            value
        ):
            raise _LongWay
        return self._run(plan, value, path if resolves else None)

    def _resolve(
        self, entry: tuple[Any, ...], source: Any, path: Any, results: dict[str, Any]
    ) -> Any:
        """A planned field with a resolver: called as graphql-core calls it, its outcome
        recorded (for `_replayed`), its value completed by plan; an awaitable value is
        left to `_settle` (its place in `results` kept)."""
        response_key, _, field_def, _, (inner, node, parent_type) = entry
        field_path = Path(path, response_key, parent_type.name)
        info = self.build_resolve_info(field_def, [node], parent_type, field_path)
        args = self._arguments(field_def, node)  # an error: nothing has run, the long way tells
        try:
            value = self._call(field_def, source, info, args)
        except Exception as error:
            self._outcomes.append((field_path, error, True, False))
            raise _LongWay from None
        if self.is_awaitable(value):
            self._pending.append((results, response_key, value, inner, field_path))
            return None
        self._outcomes.append((field_path, value, False, False))
        return self._completed(inner, value, field_path)

    def _call(self, field_def: Any, source: Any, info: Any, args: dict[str, Any]) -> Any:
        """The field's resolver, called directly (`direct_calls`) or as graphql-core does."""
        direct = self.direct.get(id(field_def))
        if direct is not None:
            return direct(source, info, args)
        return (field_def.resolve or self.field_resolver)(source, info, **args)

    def _arguments(self, field_def: Any, node: FieldNode) -> dict[str, Any]:
        """The field's arguments as graphql-core coerces them. Arguments written in a
        cached document without variables are the same at every request: coerced once
        (~5 µs a field), when every value is immutable, and handed out as copies."""
        if not (field_def.args or node.arguments):
            return {}
        if not self._static:
            return get_argument_values(
                field_def, node, self.variable_values, None, self.hide_suggestions
            )
        found = _LITERAL_ARGUMENTS.get(id(node))
        if found is not None and found[0] is node and found[1] is field_def:
            if found[2] is not None:
                return dict(found[2])
            return get_argument_values(  # variables, or values that could be changed
                field_def, node, self.variable_values, None, self.hide_suggestions
            )
        args = get_argument_values(
            field_def, node, self.variable_values, None, self.hide_suggestions
        )
        literal = not _uses_variables(node) and all(type(v) in _IMMUTABLE for v in args.values())
        if len(_LITERAL_ARGUMENTS) >= SHARED_PLANS:
            _LITERAL_ARGUMENTS.clear()
        _LITERAL_ARGUMENTS[id(node)] = (node, field_def, dict(args) if literal else None)
        return args

    def _completed(self, entry: tuple[Any, ...], value: Any, path: Any) -> Any:
        if isinstance(value, Exception):  # graphql-core raises a returned error
            raise _LongWay
        if value is None:
            if not entry[3]:
                raise _LongWay
            return None
        return self._complete(entry, value, path)

    # ------------------------------------------------------------------ one root field

    def execute_operation(self, serially: bool | None = None) -> Any:
        """An operation of one root field whose answer is plain data, or data with fields
        that have resolvers (a mutation and its payload, or a viewer's membership): its
        resolvers are called and the answer completed by plan, without graphql-core's
        machinery for the operation, the fields and the objects (~40 µs of the ~120 µs
        that executing `awardPoints` costs in Python).

        Whatever the short way does not take (an error, a null, a value the plan
        refuses) is completed the usual way from the resolvers' outcomes: graphql-core
        executes the operation with a middleware that answers each field whose resolver
        has run with that outcome (`_replayed`), so that every resolver (the root one
        may have written) runs exactly once.
        """
        root = self._root() if serially is None else None
        if root is None:
            return super().execute_operation(serially)
        root_type, field_def, details_list, key, planned = root
        node = details_list[0].node
        path = Path(None, key, root_type.name)
        info = self.build_resolve_info(field_def, [node], root_type, path)
        try:
            args = self._arguments(field_def, node)
        except Exception:  # nothing has run: the usual way reports it
            return super().execute_operation()
        try:
            value = self._call(field_def, self.root_value, info, args)
        except Exception as error:
            self._outcomes.append((path, error, True, False))
            return self._replayed()
        if self.is_awaitable(value):
            return self._await_root(value, key, planned, path)
        return self._complete_root(value, key, planned, path, False)

    async def _await_root(self, awaitable: Any, key: str, planned: Any, path: Any) -> Any:
        try:
            value = await awaitable
        except Exception as error:
            self._outcomes.append((path, error, True, True))
            result = self._replayed()
        else:
            result = self._complete_root(value, key, planned, path, True)
        if self.is_awaitable(result):
            result = await result
        return result

    def _complete_root(
        self, value: Any, key: str, planned: Planned, path: Any, awaited: bool
    ) -> Any:
        self._outcomes.append((path, value, False, awaited))
        try:
            if value is None:  # null, or an error when the type is non-null: the usual way
                raise _LongWay
            data = {key: self._object(value, planned, path)}
        except Exception:  # _LongWay, or an error that the usual way reports
            return self._replayed()
        if self._pending:
            return self._settle(data)
        return self.finish(self.build_response(data))

    async def _settle(self, data: dict[str, Any]) -> Any:
        """The awaitable values of resolvers, awaited and completed (each as soon as it
        is there, concurrently, as graphql-core does, so that DataLoader batches what one
        tick loads); after a failure, the answer the usual way from their outcomes."""
        pending, self._pending = self._pending, []
        await self._settle_all(pending)
        if self._failed:
            result = self._replayed()
            return (await result) if self.is_awaitable(result) else result
        return self.finish(self.build_response(data))

    async def _settle_all(self, pending: list[tuple[Any, ...]]) -> None:
        if len(pending) == 1:
            await self._settle_one(pending[0])
        else:
            await gather(*map(self._settle_one, pending))

    async def _settle_one(self, item: tuple[Any, ...]) -> None:
        results, key, awaitable, entry, path = item
        try:
            value = await awaitable
        except Exception as error:
            self._outcomes.append((path, error, True, True))
            self._failed = True
            return
        self._outcomes.append((path, value, isinstance(value, Exception), True))
        if self._failed:
            return
        # The awaitables this completion makes are its own to settle.
        outer, self._pending = self._pending, []
        try:
            results[key] = self._completed(entry, value, path)
        except Exception:  # _LongWay, or an error that the usual way reports
            self._failed = True
        own, self._pending = self._pending, outer
        if self._failed:
            self._dropped.extend(own)
        elif own:
            await self._settle_all(own)

    def _replayed(self) -> Any:
        """The operation executed the usual way, each field whose resolver has run
        answered by its outcome (its value, or the error it raised, located and reported
        as usual). Nothing of this execution context has run yet but those resolvers;
        awaitables they returned and that were not awaited are dropped (a coroutine not
        awaited has not run: the usual way calls its resolver)."""
        for _, _, awaitable, _, _ in (*self._pending, *self._dropped):
            if inspect.iscoroutine(awaitable):
                awaitable.close()
        self._pending, self._dropped = [], []
        outcomes = {tuple(outcome[0].as_list()): outcome[1:] for outcome in self._outcomes}

        def replay(next_: Any, root: Any, info: Any, **args: Any) -> Any:
            outcome = outcomes.get(tuple(info.path.as_list()))
            if outcome is None:
                return next_(root, info, **args)
            value, raised, awaited = outcome
            if awaited:  # as the awaitable it was: graphql-core then runs as it would have
                return _later(value, raised)
            if raised:
                raise value
            return value

        self.middleware_manager = MiddlewareManager(replay)
        self._short = False  # every field through the middleware: the usual way throughout
        return super().execute_operation()

    def _root(self) -> Root | None:
        """The operation's one root field with a plan for its answer, or None; worked out
        once per (cached, directive-free) operation."""
        if not self._static or self.abort_signal is not None or self.hooks is not None:
            return None
        return remembered(self.roots, id(self.operation), self.operation, self._find_root)

    def _find_root(self) -> Root | None:
        operation = self.operation
        selections = operation.selection_set.selections
        if (
            operation.operation not in (OperationType.QUERY, OperationType.MUTATION)
            or len(selections) != 1
            or not isinstance(selections[0], FieldNode)
            or selections[0].name.value.startswith("__")
        ):
            return None
        root_type = self.schema.get_root_type(operation.operation)
        if root_type is None:
            return None
        grouped, new_defer_usages, forbidden = collect_fields(
            self.schema, self.fragments, self.variable_values, root_type, operation,
            self.hide_suggestions,
        )  # fmt: skip
        if new_defer_usages or forbidden or len(grouped) != 1:
            return None
        ((key, details_list),) = grouped.items()
        details = details_list[0]
        if len(details_list) != 1 or details.defer_usage or details.fragment_variable_values:
            return None
        field_def = root_type.fields.get(details.node.name.value)
        if field_def is None:
            return None
        inner, _ = _unwrap(field_def.type)
        if not _plain_object(inner, self.checked):
            return None
        plan = self._sub_plan(inner, details_list, resolving=True)
        if plan is None:
            return None
        return (
            root_type,
            field_def,
            details_list,
            key,
            _planned(plan, self.checked.get(id(inner))),
        )

    # ------------------------------------------------------------------ graphql-core

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Any,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if self._short and position_context is None:
            plan = self._plan(parent_type, grouped_field_set)
            if plan is not None:
                try:
                    return self._run(plan, source_value)
                except Exception:  # _LongWay, or an error that the long way reports
                    pass
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        if self._short and len(field_details_list) == 1:
            node = field_details_list[0].node
            field = parent_type.fields.get(node.name.value)
            leaf = None if field is None else self.leaves.get(id(field))
            if leaf is not None and not node.directives:
                attribute, coerce, nullable = leaf
                try:
                    value = getattr(source, attribute)
                    if value is None:
                        if nullable:
                            return None
                    else:
                        return self._leaf(value, coerce)
                except Exception:  # as in execute_fields
                    pass
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )


def release(executor: Executor[Any]) -> None:
    """Break an executor's reference cycle once its answer is complete.

    graphql-core's executor keeps helpers bound to itself (`async_helpers`, which the
    resolve infos carry): a cycle, so the executor and all it holds (its variables,
    context, maps: ~20 objects a request) outlived the request until the cyclic GC
    found them. Young collections then ran every ~700 requests and took ~6 ms each, on
    the request path. Infos already made keep their own reference to the helpers.
    """
    executor.async_helpers = None  # type: ignore[assignment]


def use_short_way(schema: strawberry.Schema) -> bool:
    """Execute `schema` with the short way for plain data; False when this graphql-core
    or the schema's configuration does not allow it (then nothing is changed)."""
    if not SUPPORTED or schema.config.default_resolver is not getattr:
        return False
    basic, leaves = basic_fields(schema._schema)
    checked = checked_types(schema._schema)
    schema.execution_context_class = type(
        "AllianceExecutionContext",
        (AllianceExecutionContext,),
        {
            "basic": basic,
            "leaves": leaves,
            "checked": checked,
            "direct": direct_calls(schema),
            "roots": {},
            "prepared": {},
        },
    )
    return True
