"""Variables coerced by a plan made once per cached operation.

graphql-core coerces a request's variables by walking their types for every request:
it derives each variable's type from the document, checks how deep the value is
nested, then dispatches on the kind of type at every level (~10 µs for `awardPoints`'
input, ~20 µs for `recordPurchase`'s lines). The documents are cached (policy.py), so
the walk can be planned once per operation: a coercer per variable, made of closures
that do only what graphql-core does on the way to a valid value.

Identical values: a plan only ever returns what `get_variable_values` would. Anything
else (a missing or null value where the type says non-null, an unknown field, a value a
scalar refuses, a default to apply, a list given as a single item, a `@oneOf` input)
gives up, and graphql-core coerces the variables from the start, which also reports
the errors as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    OperationDefinitionNode,
    is_leaf_type,
)
from graphql.execution.collect_fields import FragmentDetails
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.execution.values import VariableValues, VariableValueSource
from graphql.pyutils import Undefined
from graphql.type.definition import is_required_input_field
from graphql.utilities.coerce_input_value import coerce_default_value

Coerce = Callable[[Any], Any]


class GiveUp(Exception):
    """The plan does not take this value: graphql-core coerces the variables."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `Executor.build` derives from a document alone, for one operation."""

    operation: OperationDefinitionNode
    fragment_definitions: dict[str, FragmentDefinitionNode]
    fragments: dict[str, FragmentDetails]
    variables: tuple[tuple[str, Any, Coerce], ...]
    """name, signature, coercer"""

    def coerce(self, inputs: Any) -> VariableValues | None:
        """The variables as `get_variable_values` coerces them, or None (it is needed)."""
        if type(inputs) is not dict:
            return None
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        try:
            for name, signature, coerce in self.variables:
                value = inputs.get(name, Undefined)
                if value is Undefined:  # a default, an omission or an error: graphql-core's
                    return None
                sources[name] = VariableValueSource(signature, value)
                coerced[name] = coerce(value)
        except GiveUp:
            return None
        return VariableValues(sources, coerced)


def prepare(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Prepared | None:
    """The operation `Executor.build` would execute, with its fragments and a plan for
    its variables; None where build does more (or reports an error)."""
    operation: OperationDefinitionNode | None = None
    fragment_definitions: dict[str, FragmentDefinitionNode] = {}
    fragments: dict[str, FragmentDetails] = {}
    for definition in document.definitions:  # as Executor.build
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None:
                if operation:
                    return None  # several operations and no name: an error
                operation = definition
            elif definition.name and definition.name.value == operation_name:
                operation = definition
        elif isinstance(definition, FragmentDefinitionNode):
            if definition.variable_definitions:
                return None  # fragment arguments: signatures of their own
            fragment_definitions[definition.name.value] = definition
            fragments[definition.name.value] = FragmentDetails(definition, None)
    if operation is None:
        return None
    variables: list[tuple[str, Any, Coerce]] = []
    for node in operation.variable_definitions or ():
        signature = get_variable_signature(schema, node)
        if isinstance(signature, GraphQLError):  # an unknown type: reported by build
            return None
        coerce = coercer(signature.type)
        if coerce is None:
            return None
        variables.append((signature.name, signature, coerce))
    return Prepared(operation, fragment_definitions, fragments, tuple(variables))


def coercer(type_: Any, building: frozenset[str] = frozenset()) -> Coerce | None:
    """A coercer of values of `type_` (as `coerce_input_value`), or None for a type the
    plan does not take (a `@oneOf` or recursive input object)."""
    if isinstance(type_, GraphQLNonNull):
        inner = coercer(type_.of_type, building)
        if inner is None:
            return None

        def non_null(value: Any) -> Any:
            if value is None:
                raise GiveUp
            return inner(value)

        return non_null
    if isinstance(type_, GraphQLList):
        item = coercer(type_.of_type, building)
        if item is None:
            return None

        def list_of(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is not list:  # graphql-core makes a list of one of it
                raise GiveUp
            return [item(each) for each in value]

        return list_of
    if isinstance(type_, GraphQLInputObjectType):
        return _input_object(type_, building)
    if is_leaf_type(type_):
        coerce_leaf = type_.coerce_input_value

        def leaf(value: Any) -> Any:
            if value is None:
                return None
            try:
                coerced = coerce_leaf(value)
            except Exception as refused:
                raise GiveUp from refused
            if coerced is Undefined:
                raise GiveUp
            return coerced

        return leaf
    return None


def _input_object(type_: GraphQLInputObjectType, building: frozenset[str]) -> Coerce | None:
    if type_.is_one_of or type_.name in building:
        return None
    building = building | {type_.name}
    fields: list[tuple[str, str, Coerce, bool, Any]] = []
    for name, field in type_.fields.items():
        coerce = coercer(field.type, building)
        if coerce is None:
            return None
        try:
            default = coerce_default_value(field)  # a field left out gets its default
        except Exception:  # an invalid default: graphql-core reports it
            return None
        fields.append((name, field.out_name or name, coerce, is_required_input_field(field),
                       default))  # fmt: skip
    names = frozenset(type_.fields)
    out_type = type_.out_type

    def input_object(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not dict or not names.issuperset(value):
            raise GiveUp  # not an object, or an unknown field
        coerced: dict[str, Any] = {}
        for name, out_name, coerce, required, default in fields:
            field_value = value.get(name, Undefined)
            if field_value is Undefined:
                if required:
                    raise GiveUp
                if default is not Undefined:
                    coerced[out_name] = default
            else:
                coerced[out_name] = coerce(field_value)
        return out_type(coerced)

    return input_object
