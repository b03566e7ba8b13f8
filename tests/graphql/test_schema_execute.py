"""`AllianceSchema.execute` takes its own way past strawberry's extension machinery; every
answer here is compared with strawberry's own `Schema.execute` on the same schema: data,
errors as the client sees them, and the exceptions a transport turns into a 400."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from schema import create_schema
from schema.context import Context
from schema.policy import present_result
from tests.factories import OPERATOR, make_membership, make_program, member_actor

MERCHANTS = "query M($first: Int) { merchants(first: $first) { edges { node { id name } } } }"
TWO = "query A { __typename } query B { x: __typename }"
QUERY_OR_MUTATION = {OperationType.QUERY, OperationType.MUTATION}

CASES: list[tuple[str, str | None, dict[str, Any] | None, str | None, Any]] = [
    ("typename", "{ __typename }", None, None, None),
    ("variables", MERCHANTS, {"first": 2}, None, None),
    ("default variable", MERCHANTS, {}, None, None),
    ("nested", "{ viewer { membership { balance { points held } } } }", None, None, None),
    ("syntax error", "{ __typename", None, None, None),
    ("empty document", "", None, None, None),
    ("no query", None, None, None, None),
    ("only a fragment", "fragment F on Query { __typename }", None, None, None),
    ("invalid field", "{ nope }", None, None, None),
    ("unused variable", "query($x: Int) { __typename }", None, None, None),
    ("wrong variable type", MERCHANTS, {"first": "x"}, None, None),
    ("missing required variable", "query($id: ID!) { node(id: $id) { id } }", {}, None, None),
    ("too deep", "{ a: __typename " + "".join(f"b{i}: __typename " for i in range(50)) + "}",
     None, None, None),
    ("first of two, unnamed", TWO, None, None, None),
    ("second of two", TWO, None, "B", None),
    ("unknown operation", TWO, None, "C", None),
    ("subscription", "subscription { events { __typename } }", None, None, QUERY_OR_MUTATION),
    ("mutation not allowed", "mutation { __typename }", None, None, {OperationType.QUERY}),
    ("nothing allowed", "{ __typename }", None, None, set()),
    ("a field error", 'query { node(id: "bm90IGFuIGlk") { id } }', None, None, None),
    ("unauthenticated", "{ viewer { membership { id } } }", None, None, None),
    ("a domain refusal", "mutation { createMerchant(input: {code: \"Bad Code\", name: \"x\"}) "
     "{ merchant { id } userErrors { code field } } }", None, None, None),
]  # fmt: skip


def _answer(outcome: Any) -> Any:
    if isinstance(outcome, Exception):
        return type(outcome), str(outcome)
    errors = [error.formatted for error in outcome.errors or ()]
    return outcome.data, errors, outcome.extensions


@pytest.mark.parametrize(("name", "query", "variables", "operation", "allowed"), CASES,
                         ids=[case[0] for case in CASES])  # fmt: skip
@pytest.mark.parametrize("who", ["operator", "member", "anonymous"])
async def test_the_same_answer_as_strawberry(
    db: Database,
    name: str,
    query: str | None,
    variables: dict[str, Any] | None,
    operation: str | None,
    allowed: Any,
    who: str,
) -> None:
    schema = create_schema(db.settings)
    actor: Actor | None = None
    if who == "operator":
        actor = OPERATOR
    elif who == "member":
        program = await make_program(db)
        actor = member_actor(await make_membership(db, program), program.merchant_id)
    answers = []

    async def strawberrys_way(*args: Any, **kwargs: Any) -> Any:
        # What AllianceSchema.execute was: strawberry's, the errors presented.
        return present_result(await strawberry.Schema.execute(schema, *args, **kwargs))

    for execute in (schema.execute, strawberrys_way):
        try:
            outcome: Any = await execute(
                query,
                variable_values=variables,
                context_value=Context(db, db.settings, actor, request_id="same"),
                operation_name=operation,
                allowed_operation_types=allowed,
            )
        except (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError) as error:
            outcome = error
        answers.append(_answer(outcome))
    mine, strawberrys = answers
    assert mine == strawberrys


def test_the_schema_takes_its_own_way() -> None:
    """Nothing the schema is built with sends it the long way (or the test above compares
    strawberry with itself)."""
    assert create_schema().plain


async def test_a_subscription_is_never_executed_as_one_answer(db: Database) -> None:
    """Where strawberry's execute runs a subscription and fails (a masked internal error),
    the schema refuses it before anything runs, even when the caller allows its type."""
    schema = create_schema(db.settings)
    with pytest.raises(InvalidOperationTypeError):
        await schema.execute(
            "subscription { events { __typename } }",
            context_value=Context(db, db.settings, OPERATOR),
            allowed_operation_types=set(OperationType),
        )


def test_remembered_names_are_strawberrys() -> None:
    """The schema converts each name once; every conversion is strawberry's own."""
    from strawberry.schema.name_converter import NameConverter

    from schema import RememberedNames

    remembered, stock = RememberedNames(), NameConverter()
    names = ["points_per_unit", "idempotency_key", "first", "member_number_2", "_private"]
    for name in names * 2:
        assert remembered.apply_naming_config(name) == stock.apply_naming_config(name)
    assert set(remembered._converted) == set(names)
    assert isinstance(create_schema().config.name_converter, RememberedNames)


async def test_a_cached_document_takes_each_requests_variables(db: Database) -> None:
    """Arguments are coerced once per cached document only when written without
    variables: the same document answers each request's own values."""
    from schema.execution import _LITERAL_ARGUMENTS

    for _ in range(3):
        await make_program(db)
    schema = create_schema()
    context = Context(db, db.settings, OPERATOR)
    literal = "{ merchants(first: 2) { edges { node { id } } } }"
    counts = []
    for first in (1, 3, 2, 3):
        result = await schema.execute(MERCHANTS, variable_values={"first": first},
                                      context_value=context)  # fmt: skip
        assert not result.errors
        counts.append(len(result.data["merchants"]["edges"]))  # type: ignore[index]
        result = await schema.execute(literal, context_value=context)
        assert len(result.data["merchants"]["edges"]) == 2  # type: ignore[index]
    assert counts == [1, 3, 2, 3]
    remembered = [args for _, _, args in _LITERAL_ARGUMENTS.values() if args]
    assert {"first": 2, "after": None} in remembered
