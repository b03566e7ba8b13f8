"""Input objects built from a plan made once per input type.

For every field of every input value of every request, strawberry's generic
`convert_argument` asks the name converter for the field's GraphQL name, resolves the
field's annotation and works out whether its type is a leaf: 117 µs for a
`recordPurchase` input with three order lines, about 8 % of that request's CPU
(bench/RESULTS.md, 2026-11-26). A plan keeps those answers per input type, and values
are built by the same rules: leaves as graphql-core coerced them, lists of leaves
copied (graphql-core shares default values between requests), everything else (global
IDs, nested inputs, enums) through strawberry's own conversion, whose nested inputs come
back here. The plan is installed through `StrawberryObjectDefinition.from_input`,
strawberry's hook for types that build their own value.

Types with a `Maybe` field keep strawberry's path: for those the hook would also have to
validate nulls. `tests/graphql/test_inputs.py` checks that every input type of the
schema builds the same value both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any

import strawberry
from strawberry.relay import GlobalID
from strawberry.relay.types import GlobalIDValueError, InvalidGlobalIDError
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
)

try:
    from strawberry.types.arguments import InputContext, _is_leaf_type, _is_optional_leaf_type

    SUPPORTED = True
except ImportError:  # another strawberry: its own conversion stays
    SUPPORTED = False

_Convert = Callable[[Any, "InputContext", str], Any]


def _as_is(value: Any, context: InputContext, name: str) -> Any:
    return value


def _copied(value: Any, context: InputContext, name: str) -> Any:
    return list(value)


class _Plan:
    """How to build one input type: (GraphQL name, Python name, conversion) per field,
    and the implicit None of fields without a default."""

    __slots__ = ("defaults", "fields")

    def __init__(self, definition: StrawberryObjectDefinition, context: InputContext) -> None:
        registry = context.scalar_registry
        self.defaults = {
            field.python_name: None
            for field in definition.fields
            if field.default_value is MISSING and field.default_factory is MISSING
        }
        self.fields: list[tuple[str, str, _Convert]] = []
        for field in definition.fields:
            type_ = field.resolve_type(type_definition=definition)
            convert: _Convert
            if _is_leaf_type(type_, registry, (GlobalID,)) or _is_optional_leaf_type(
                type_, registry, (GlobalID,)
            ):
                convert = _as_is
            elif _is_list_of_leaves(type_, registry):
                convert = _copied
            elif _unwrapped(type_) is GlobalID:
                convert = _global_id
            elif (inner := _list_of_inputs(type_)) is not None:
                convert = _each(inner)
            else:
                convert = _through_strawberry(type_)
            name = context.config.name_converter.from_field(field)
            self.fields.append((name, field.python_name, convert))


def _is_list_of_leaves(type_: Any, registry: Any) -> bool:
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return isinstance(type_, StrawberryList) and (
        _is_leaf_type(type_.of_type, registry, (GlobalID,))
        or _is_optional_leaf_type(type_.of_type, registry, (GlobalID,))
    )


def _unwrapped(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, StrawberryOptional) else type_


def _global_id(value: Any, context: InputContext, name: str) -> Any:
    try:
        return GlobalID.from_id(value)
    except GlobalIDValueError as error:  # as strawberry words it
        raise InvalidGlobalIDError(f'Value cannot represent a GlobalID: "{value}".') from error


def _list_of_inputs(type_: Any) -> type | None:
    """The input class of a list of non-null input objects, when it has a plan."""
    type_ = _unwrapped(type_)
    if not isinstance(type_, StrawberryList):
        return None
    item: Any = type_.of_type
    definition = getattr(item, "__strawberry_definition__", None)
    if isinstance(definition, StrawberryObjectDefinition) and definition.is_input:
        return item if getattr(definition.from_input, "by_plan", False) else None
    return None


def _each(item: type) -> _Convert:
    build = item.__strawberry_definition__.from_input  # type: ignore[attr-defined]

    def convert(value: Any, context: InputContext, name: str) -> Any:
        return [build(item, one, context) for one in value]

    return convert


def _through_strawberry(type_: Any) -> _Convert:
    def convert(value: Any, context: InputContext, name: str) -> Any:
        return context.convert(value, type_, name)

    return convert


def _builder(definition: StrawberryObjectDefinition) -> Callable[..., Any]:
    plans: dict[int, _Plan] = {}  # per schema configuration (name converter, scalars)

    def from_input(cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        key = id(context.config)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _Plan(definition, context)
        kwargs = dict(plan.defaults)
        for name, python_name, convert in plan.fields:
            if name in value:
                given = value[name]
                kwargs[python_name] = None if given is None else convert(given, context, name)
        return cls(**kwargs)

    from_input.by_plan = True  # type: ignore[attr-defined]
    return from_input


def build_inputs_by_plan(schema: strawberry.Schema) -> bool:
    """Give every input type of `schema` without a `Maybe` field its plan; False when
    this strawberry does not allow it (then nothing is changed)."""
    if not SUPPORTED:
        return False
    for concrete in schema.schema_converter.type_map.values():
        definition = concrete.definition
        if not isinstance(definition, StrawberryObjectDefinition) or not definition.is_input:
            continue
        if definition.from_input is not None or any(
            isinstance(field.type, StrawberryMaybe) for field in definition.fields
        ):
            continue
        definition.from_input = _builder(definition)
    return True
