"""Variables coerced by plan (schema/variables.py) are what graphql-core makes of them:
every mutation's input, with values good and bad, coerced both ways and compared.
(tests/graphql/test_execution.py executes documents with variables, good and bad,
through both execution contexts.)"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    parse,
)
from graphql.execution.values import VariableValues, get_variable_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strawberry import relay

from alliance.config import Settings
from schema import create_schema
from schema.variables import prepare

SCHEMA = create_schema(Settings())
GRAPHQL = SCHEMA._schema
MUTATIONS = sorted(GRAPHQL.mutation_type.fields) if GRAPHQL.mutation_type else []

INT = st.integers(-(2**31), 2**31 - 1)
SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "String": st.text(max_size=8),
    "ID": st.one_of(st.text(max_size=8), st.just(str(relay.GlobalID("Membership", "12")))),
    "Int": INT,
    "BigInt": st.one_of(INT, st.integers()),
    "Float": st.floats(allow_nan=False, allow_infinity=False),
    "Boolean": st.booleans(),
    "Decimal": st.sampled_from(["12", "0.5", "-3.25", "1e3"]),
    "DateTime": st.sampled_from(["2026-11-26T10:00:00+00:00", "2026-11-26T10:00:00Z"]),
    "Date": st.sampled_from(["2026-11-26", "2027-01-31"]),
    "JSON": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), INT, max_size=2)),
}
"""Well-formed values of each scalar; ODD and the like below make the ill-formed."""
ODD: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.text(max_size=4), st.integers(), st.floats(), st.booleans(), st.just([])
)


@cache
def values(type_: Any, odd: bool = True) -> st.SearchStrategy[Any]:
    """Values of `type_`: well formed, and with `odd` now and then not."""

    def bad(*strategies: st.SearchStrategy[Any]) -> tuple[st.SearchStrategy[Any], ...]:
        return strategies if odd else ()

    if isinstance(type_, GraphQLNonNull):
        return st.one_of(values(type_.of_type, odd), *bad(st.none()))
    if isinstance(type_, GraphQLList):
        item = st.deferred(lambda: values(type_.of_type, odd))
        return st.one_of(st.lists(item, max_size=3), *bad(item, st.none()))
    if isinstance(type_, GraphQLInputObjectType):
        fields = {
            name: st.deferred(lambda field=field: values(field.type, odd))  # type: ignore[misc]
            for name, field in type_.fields.items()
        }
        complete = st.fixed_dictionaries(fields)
        partial = st.fixed_dictionaries({}, optional=fields)  # defaults apply, or errors
        extra = st.builds(lambda d: {**d, "unknownField": 1}, complete)
        return st.one_of(complete, *bad(partial, extra, ODD))
    if isinstance(type_, GraphQLEnumType):
        return st.one_of(st.sampled_from(sorted(type_.values)), *bad(st.text(max_size=4)))
    if isinstance(type_, GraphQLScalarType):
        samples = st.sampled_from(["12", "-3", "1.50", "2026-11-26T10:00:00+00:00"])
        return st.one_of(SCALARS[type_.name], *bad(ODD, st.text(max_size=12), samples))
    raise AssertionError(f"no values for {type_}")


def _document(field: str) -> tuple[Any, Any]:
    argument = GRAPHQL.mutation_type.fields[field].args["input"]  # type: ignore[union-attr]
    document = parse(
        f"mutation($input: {argument.type}) {{ {field}(input: $input) {{ __typename }} }}"
    )
    return document, argument.type


@cache
def _prepared(field: str) -> Any:
    document, _ = _document(field)
    prepared = prepare(GRAPHQL, document, None)
    assert prepared is not None, f"{field}: no plan for its input"
    return prepared


def _comparable(values: VariableValues) -> tuple[dict[str, Any], dict[str, Any]]:
    """The coerced values, and each source's signature and value (a signature's type is
    a wrapper made anew for each signature: compared by what it prints)."""
    sources = {
        name: (source.signature.name, str(source.signature.type), source.signature.default,
               source.value)
        for name, source in values.sources.items()
    }  # fmt: skip
    return values.coerced, sources


@pytest.mark.parametrize("odd", [False, True], ids=["well-formed", "any"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_planned_variables_are_graphql_cores(odd: bool, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(MUTATIONS))
    prepared = _prepared(field)
    _, input_type = _document(field)
    variables = data.draw(st.fixed_dictionaries({"input": values(input_type, odd)}))
    expected = get_variable_values(GRAPHQL, prepared.operation.variable_definitions, variables)
    planned = prepared.coerce(variables)
    if planned is not None:  # taken by the plan: exactly graphql-core's value
        assert not isinstance(expected, list), expected
        assert _comparable(planned) == _comparable(expected)
    elif not odd:  # the plan takes every well-formed input (no defaults are left out)
        assert isinstance(expected, list), f"{field}: {variables} left to graphql-core"


def test_every_mutation_input_has_a_plan_and_a_valid_input_takes_it() -> None:
    for field in MUTATIONS:
        _prepared(field)  # asserts a plan
    award = _prepared("awardPoints")
    variables = {"input": {"membershipId": str(relay.GlobalID("Membership", "7")), "points": 5,
                           "reason": "why", "idempotencyKey": "k"}}  # fmt: skip
    planned = award.coerce(variables)
    assert planned is not None
    expected = get_variable_values(GRAPHQL, award.operation.variable_definitions, variables)
    assert _comparable(planned) == _comparable(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "variables",
    [
        {},  # missing: graphql-core reports it
        {"input": None},
        {"input": {"membershipId": "x", "points": "five", "reason": "r", "idempotencyKey": "k"}},
        {"input": {"points": 5, "reason": "r", "idempotencyKey": "k"}},
        {"input": {"membershipId": "x", "points": 5, "reason": "r", "idempotencyKey": "k", "x": 1}},
        {"input": [{"membershipId": "x", "points": 5, "reason": "r", "idempotencyKey": "k"}]},
        ["not", "an", "object"],
    ],
)
def test_what_the_plan_does_not_take_is_left_to_graphql_core(variables: Any) -> None:
    award = _prepared("awardPoints")
    assert award.coerce(variables) is None


def test_documents_build_would_refuse_have_no_plan() -> None:
    two = parse("query A { __typename } query B { __typename }")
    assert prepare(GRAPHQL, two, None) is None  # which one? build says so
    assert prepare(GRAPHQL, two, "B") is not None
    assert prepare(GRAPHQL, two, "C") is None
    unknown = parse("query($x: NoSuchType) { __typename }")
    assert prepare(GRAPHQL, unknown, None) is None


def test_a_document_is_prepared_once_with_a_plan_or_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import schema.execution

    calls: list[str | None] = []

    def counting(schema: Any, document: Any, operation_name: str | None) -> Any:
        calls.append(operation_name)
        return prepare(schema, document, operation_name)

    monkeypatch.setattr(schema.execution, "prepare", counting)
    context = create_schema(Settings()).execution_context_class
    two = parse("query A { __typename } query B { __typename }")
    for _ in range(3):
        assert context._prepare(GRAPHQL, two, None) is None  # type: ignore[union-attr]
        assert context._prepare(GRAPHQL, two, "B") is not None  # type: ignore[union-attr]
    assert calls == [None, "B"]
