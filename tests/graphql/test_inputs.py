"""Input objects built by plan (schema/inputs.py) equal what strawberry's own conversion
builds: every input type of the schema, with every field given, with only the required
ones, and with nulls where they are allowed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
)
from strawberry.relay import GlobalID
from strawberry.relay.types import InvalidGlobalIDError
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryObjectDefinition

from schema import create_schema
from schema.inputs import SUPPORTED

SCHEMA = create_schema()
CONVERTER = SCHEMA.schema_converter
INPUTS = sorted(
    (c.definition for c in CONVERTER.type_map.values()
     if isinstance(c.definition, StrawberryObjectDefinition) and c.definition.is_input),
    key=lambda d: d.name,
)  # fmt: skip
GLOBAL_ID = GlobalID("Membership", "7")

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="this strawberry builds its own inputs")


@contextmanager
def strawberry_only() -> Iterator[None]:
    hooks = {d: d.from_input for d in INPUTS}
    for definition in INPUTS:
        definition.from_input = None
    try:
        yield
    finally:
        for definition, hook in hooks.items():
            definition.from_input = hook


def _value(type_: GraphQLInputType, *, full: bool, nulls: bool, field: str) -> Any:
    """A coerced input value of `type_`, as graphql-core hands it over: leaves are opaque
    (both ways pass them through untouched), except global IDs."""
    if isinstance(type_, GraphQLNonNull):
        return _value(type_.of_type, full=full, nulls=False, field=field)
    if nulls:
        return None
    if isinstance(type_, GraphQLList):
        return [_value(type_.of_type, full=full, nulls=False, field=field) for _ in range(2)]
    if isinstance(type_, GraphQLInputObjectType):
        return _object(type_, full=full, nulls=False)
    if isinstance(type_, GraphQLScalarType) and type_.name == "ID":
        return str(GLOBAL_ID)  # a global ID, or an opaque string for plain IDs
    assert isinstance(type_, GraphQLScalarType | GraphQLEnumType)
    return f"<{type_.name} of {field}>"


def _object(type_: GraphQLInputObjectType, *, full: bool, nulls: bool) -> dict[str, Any]:
    value = {}
    for name, field in type_.fields.items():
        required = isinstance(field.type, GraphQLNonNull) and field.default_value is None
        if full or required:
            value[name] = _value(field.type, full=full, nulls=nulls, field=name)
    return value


def _both_ways(definition: StrawberryObjectDefinition, value: dict[str, Any]) -> tuple[Any, Any]:
    registry, config = CONVERTER.scalar_registry, SCHEMA.config
    by_plan = convert_argument(value, definition.origin, registry, config)
    with strawberry_only():
        expected = convert_argument(value, definition.origin, registry, config)
    return by_plan, expected


def test_every_input_type_has_a_plan() -> None:
    assert INPUTS
    assert all(getattr(d.from_input, "by_plan", False) for d in INPUTS)


@pytest.mark.parametrize("shape", ["full", "required", "nulls"])
@pytest.mark.parametrize("definition", INPUTS, ids=lambda d: d.name)
def test_built_as_strawberry_builds_it(definition: StrawberryObjectDefinition, shape: str) -> None:
    graphql_type = SCHEMA._schema.get_type(definition.name)
    assert isinstance(graphql_type, GraphQLInputObjectType)
    value = _object(graphql_type, full=shape != "required", nulls=shape == "nulls")
    by_plan, expected = _both_ways(definition, value)
    assert type(by_plan) is type(expected)
    assert by_plan == expected


def test_a_bad_global_id_is_refused_as_strawberry_refuses_it() -> None:
    (definition,) = [d for d in INPUTS if d.name == "RecordPurchaseInput"]
    value = {"membershipId": "not base64", "orderId": "o", "amount": "1", "currency": "CNY",
             "lines": []}  # fmt: skip
    registry, config = CONVERTER.scalar_registry, SCHEMA.config
    with pytest.raises(InvalidGlobalIDError) as by_plan:
        convert_argument(value, definition.origin, registry, config)
    with strawberry_only(), pytest.raises(InvalidGlobalIDError) as expected:
        convert_argument(value, definition.origin, registry, config)
    assert str(by_plan.value) == str(expected.value)


def test_lists_of_leaves_are_copied() -> None:
    """graphql-core gives every request that omits a list the same default object."""
    for definition in INPUTS:
        graphql_type = SCHEMA._schema.get_type(definition.name)
        assert isinstance(graphql_type, GraphQLInputObjectType)
        value = _object(graphql_type, full=True, nulls=False)
        built, _ = _both_ways(definition, value)
        for name, field in graphql_type.fields.items():
            if isinstance(value.get(name), list) and not isinstance(
                getattr(field.type, "of_type", field.type), GraphQLInputObjectType
            ):
                names = {SCHEMA.config.name_converter.from_field(f): f.python_name
                         for f in definition.fields}  # fmt: skip
                assert getattr(built, names[name]) is not value[name]
