"""The short way for plain data (schema/execution.py) answers exactly as graphql-core does:
every document here is executed by both execution contexts and the answers compared,
errors included."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import pytest
import strawberry
from graphql import GraphQLError, GraphQLObjectType
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig

from alliance.config import Settings
from schema import create_schema
from schema.execution import SUPPORTED, AllianceExecutionContext, use_short_way
from schema.scalars import SCALARS, BigInt


@strawberry.enum
class Kind(enum.Enum):
    PLAIN = "plain"
    FANCY = "fancy"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Item(Named):
    count: BigInt
    price: Decimal
    kind: Kind
    tags: list[str]
    maybe: str | None
    at: datetime
    numbers: list[int | None]


@strawberry.type
class Line:
    label: str
    value: int
    note: str | None


@strawberry.type
class Edge:
    cursor: str
    node: Line


@strawberry.type
class Page:
    edges: list[Edge]
    total: int
    extra: Line | None

    @strawberry.field
    def computed(self) -> str:
        return f"{self.total} lines"


def _line(n: int, **changes: Any) -> Line:
    return Line(**{"label": f"line {n}", "value": n, "note": None, **changes})


def _page(*lines: Line, extra: Line | None = None) -> Page:
    return Page(edges=[Edge(cursor=f"c{n}", node=line) for n, line in enumerate(lines)],
                total=len(lines), extra=extra)  # fmt: skip


async def _later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


@strawberry.type
class Thing(relay.Node):
    """A relay node resolved the stock way: its id takes the short way."""

    code: relay.NodeID[str]
    name: str


@strawberry.type
class Custom(relay.Node):
    """A node with its own resolve_id: its id takes the long way."""

    code: relay.NodeID[str]

    @classmethod
    def resolve_id(cls, root: Custom, *, info: Any) -> str:
        return f"custom-{root.code}"


class SubThing(Thing):
    """Not a strawberry type of its own: strawberry's is_type_of accepts it as a Thing."""


@strawberry.type
class Holder:
    """Relay nodes inside plain data: the short way checks their class itself."""

    thing: Thing | None
    things: list[Thing]


class Weird:
    """A line whose attribute fails when read."""

    label = "weird"
    note = None

    @property
    def value(self) -> int:
        raise ValueError("no value today")


class Refused(BasePermission):
    message = "not you"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return False


class Allowed(BasePermission):
    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return True


class Unsure(BasePermission):
    """Answers neither yes nor no: strawberry refuses such an answer."""

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return None  # type: ignore[return-value]


class Later(BasePermission):
    """Answers with an awaitable (a plain def): strawberry awaits it for async fields,
    and refuses it for sync ones. Allows even boxes."""

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        async def answer() -> bool:
            return source.n % 2 == 0

        return answer()  # type: ignore[return-value]


class Asks(BasePermission):
    """Looks at the field's arguments, as strawberry passes them."""

    message = "not that index"

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return bool(kwargs.get("index", 0) < 10)


RESOLVED: list[str] = []
"""The nested resolvers called, with their paths: each must run once per execution."""


def _called(info: Any, name: str) -> None:
    RESOLVED.append(f"{name}@{'.'.join(map(str, info.path.as_list()))}")


@strawberry.type
class Box:
    """Fields with resolvers under a root field: sync and async, with an argument, failing
    in each way, refused; in lists; nested."""

    n: int

    @strawberry.field
    def top(self, info: strawberry.Info) -> Line:
        _called(info, "top")
        return _line(self.n)

    @strawberry.field
    async def later(self, info: strawberry.Info) -> Line:
        _called(info, "later")
        await asyncio.sleep(0)
        return _line(self.n * 10, note="later")

    @strawberry.field
    async def pick(self, info: strawberry.Info, index: int, note: str | None = None) -> Line:
        _called(info, "pick")
        return _line(index, note=note)

    @strawberry.field
    async def maybe(self, info: strawberry.Info) -> Line | None:
        _called(info, "maybe")
        return None if self.n % 2 else _line(self.n)

    @strawberry.field
    async def broken(self, info: strawberry.Info) -> Line:
        _called(info, "broken")
        if self.n == 2:
            raise ValueError(f"box {self.n} is broken")
        return _line(self.n)

    @strawberry.field
    async def missing(self, info: strawberry.Info) -> Line:
        _called(info, "missing")
        return None if self.n == 2 else _line(self.n)  # type: ignore[return-value]

    @strawberry.field
    def bad_line(self, info: strawberry.Info) -> Line:
        _called(info, "badLine")
        return _line(self.n, label=None) if self.n == 3 else _line(self.n)

    @strawberry.field(permission_classes=[Refused])
    async def refused(self, info: strawberry.Info) -> Line:
        _called(info, "refused")
        return _line(self.n)

    @strawberry.field(permission_classes=[Allowed, Refused])
    def refused_sync(self, info: strawberry.Info) -> Line:
        _called(info, "refusedSync")
        return _line(self.n)

    @strawberry.field(permission_classes=[Allowed])
    async def allowed(self, info: strawberry.Info) -> Line:
        _called(info, "allowed")
        return _line(self.n)

    @strawberry.field(permission_classes=[Unsure])
    async def unsure(self, info: strawberry.Info) -> Line:
        _called(info, "unsure")
        return _line(self.n)

    @strawberry.field(permission_classes=[Unsure])
    def unsure_sync(self, info: strawberry.Info) -> Line:
        _called(info, "unsureSync")
        return _line(self.n)

    @strawberry.field(permission_classes=[Allowed, Later])
    async def later_allowed(self, info: strawberry.Info) -> Line:
        _called(info, "laterAllowed")
        return _line(self.n)

    @strawberry.field(permission_classes=[Later])
    def later_sync(self, info: strawberry.Info) -> Line:
        _called(info, "laterSync")
        return _line(self.n)

    @strawberry.field(permission_classes=[Asks])
    async def asks(self, info: strawberry.Info, index: int) -> Line:
        _called(info, "asks")
        return _line(index)

    @strawberry.field
    async def inner(self, info: strawberry.Info) -> Box:
        _called(info, "inner")
        return Box(n=self.n + 100)

    @strawberry.field
    async def boxes(self, info: strawberry.Info) -> list[Box]:
        _called(info, "boxes")
        return [Box(n=self.n + 1), Box(n=self.n + 2), Box(n=self.n + 3)]

    @strawberry.field
    def thing(self, info: strawberry.Info) -> Thing:
        _called(info, "thing")
        return Thing(code=str(self.n), name="boxed")

    @strawberry.field
    async def sought(
        self,
        info: strawberry.Info,
        thing: relay.GlobalID | None = None,
        order: Order | None = None,
        index: int = 0,
    ) -> Line:
        """Optional arguments of types strawberry converts: passed as they arrive."""
        _called(info, "sought")
        return _line(index, label=f"{type(thing).__name__}:{thing}", note=repr(order))

    @strawberry.field
    async def loaded(self, info: strawberry.Info) -> Line:
        return _line(await info.context["loader"].load(self.n))


@strawberry.type
class Query:
    @strawberry.field
    def page(self) -> Page:
        return _page(_line(1), _line(2, note="two"), _line(3), extra=_line(9))

    @strawberry.field
    def broken_null(self) -> Page:
        # A null where the type says non-null, deep in plain data.
        return _page(_line(1), _line(2, label=None))

    @strawberry.field
    def broken_scalar(self) -> Page:
        return _page(_line(1, value="not a number"))

    @strawberry.field
    def broken_read(self) -> Page:
        return _page(_line(1), Weird())  # type: ignore[arg-type]

    @strawberry.field
    def awaited(self) -> Page:
        # An attribute holding an awaitable: graphql-core awaits it.
        return _page(_line(1, label=_later("later")))

    @strawberry.field
    def null_item(self) -> Page:
        page = _page(_line(1))
        page.edges.append(None)  # type: ignore[arg-type]
        return page

    @strawberry.field
    def items(self) -> list[Item]:
        return _items()

    @strawberry.field
    def named(self) -> list[Named]:
        return list(_items())

    @strawberry.field
    def things(self) -> list[Thing]:
        return [Thing(code="1", name="one"), Thing(code="b/2", name="two")]

    @strawberry.field
    def customs(self) -> list[Custom]:
        return [Custom(code="1")]

    @strawberry.field
    def broken_things(self) -> list[Thing]:
        return [Thing(code="1", name="one"), Thing(code=None, name="nameless")]  # type: ignore[arg-type]

    @strawberry.field
    def holder(self) -> Holder:
        return Holder(thing=Thing(code="1", name="one"), things=[Thing(code="2", name="two")])

    @strawberry.field
    def sub_holder(self) -> Holder:
        return Holder(thing=SubThing(code="3", name="sub"), things=[SubThing(code="4", name="s")])

    @strawberry.field
    def cast_holder(self) -> Holder:
        # Cast to another type: strawberry's is_type_of refuses it.
        cast = strawberry.cast(Custom, Thing(code="5", name="cast"))
        return Holder(thing=cast, things=[Thing(code="6", name="six")])

    @strawberry.field
    def wrong_holder(self) -> Holder:
        return Holder(thing=None, things=[Thing(code="7", name="ok"), _line(8)])  # type: ignore[list-item]

    @strawberry.field
    def nodes(self) -> list[relay.Node]:
        return [Thing(code="1", name="one"), Custom(code="2")]

    @strawberry.field
    def box(self, n: int = 1) -> Box:
        return Box(n=n)

    @strawberry.field
    async def boxes(self) -> list[Box]:
        return [Box(n=1), Box(n=2), Box(n=3)]


CALLS: list[str] = []
"""The root resolvers called, in order: each must run exactly once per execution."""


@strawberry.input
class Order:
    label: str
    value: int = 1
    note: str | None = None


@strawberry.type
class Outcome:
    line: Line | None
    lines: list[Line]
    done: bool

    @strawberry.field
    def shout(self) -> str:
        return "done!" if self.done else "not done"


def _outcome(order: Order) -> Outcome:
    line = Line(label=order.label, value=order.value, note=order.note)
    return Outcome(line=line, lines=[line, _line(2)], done=True)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def place(self, order: Order) -> Outcome:
        CALLS.append("place")
        await asyncio.sleep(0)
        return _outcome(order)

    @strawberry.mutation
    def place_sync(self, order: Order) -> Outcome:
        CALLS.append("placeSync")
        return _outcome(order)

    @strawberry.mutation
    async def place_maybe(self, order: Order) -> Outcome | None:
        CALLS.append("placeMaybe")
        return None if order.label == "none" else _outcome(order)

    @strawberry.mutation
    async def place_broken(self, order: Order) -> Outcome:
        CALLS.append("placeBroken")
        if order.label == "raise":
            raise ValueError("the till is closed")
        if order.label == "graphql":
            raise GraphQLError("refused here", extensions={"code": "NOPE"})
        if order.label == "none":
            return None  # type: ignore[return-value]
        outcome = _outcome(order)
        outcome.lines.append(Line(label=None, value=3, note=None))  # type: ignore[arg-type]
        return outcome

    @strawberry.mutation(permission_classes=[Refused])
    async def place_refused(self, order: Order) -> Outcome:
        CALLS.append("placeRefused")
        return _outcome(order)


def _items() -> list[Item]:
    at = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    return [
        Item(name="a", count=BigInt(2**40), price=Decimal("0.010000"), kind=Kind.PLAIN,
             tags=["x", "y"], maybe=None, at=at, numbers=[1, None, 3]),
        Item(name="b", count=BigInt(0), price=Decimal("12.5"), kind=Kind.FANCY,
             tags=[], maybe="m", at=at, numbers=[]),
    ]  # fmt: skip


def _schema(short: bool) -> strawberry.Schema:
    schema = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        types=[Item, Thing, Custom],
        config=StrawberryConfig(scalar_map=SCALARS),
    )
    if short:
        assert use_short_way(schema)
    return schema


PAGE = "edges { cursor node { label value note } } total extra { label value }"
DOCUMENTS = [
    f"{{ page {{ {PAGE} }} }}",
    f"{{ page {{ {PAGE} computed }} }}",
    "{ page { __typename edges { __typename node { __typename v: value l: label } } } }",
    "{ page { ...P } } fragment P on Page { edges { node { ... on Line { label } value } } }",
    "{ page { edges { node { label } node { value } } total total } }",
    f"{{ brokenNull {{ {PAGE} }} }}",
    "{ brokenNull { total } page { total } }",
    f"{{ brokenScalar {{ {PAGE} }} }}",
    f"{{ brokenRead {{ {PAGE} }} }}",
    f"{{ awaited {{ {PAGE} }} }}",
    f"{{ nullItem {{ {PAGE} }} }}",
    "{ items { name count price kind tags maybe at numbers } }",
    "{ named { name ... on Item { count kind } } }",
    "{ things { id name } customs { id } }",
    "{ things { __typename id code i: id } }",
    "{ brokenThings { id name } }",
    "{ nodes { id ... on Thing { name } } }",
    "{ holder { thing { id name } things { __typename id name } } }",
    "{ subHolder { thing { id name } things { id } } }",
    "{ castHolder { thing { id name } things { id } } }",
    "{ wrongHolder { thing { id } things { id name } } }",
]
NESTED = [
    # (document, variables): a root field whose answer has fields with resolvers.
    ("{ box { n top { label value } later { label note } } }", None),
    (
        '{ box(n: 4) { pick(index: 7) { value } p: pick(index: 8, note: "x") { value note } } }',
        None,
    ),
    ("query($i: Int!) { box { pick(index: $i) { value } } }", {"i": 5}),
    ("query($i: Int!) { box { pick(index: $i) { value } } }", {"i": "five"}),
    ("{ box { maybe { label } } }", None),
    ("{ box(n: 2) { maybe { label } top { label } } }", None),
    ("{ box(n: 2) { top { label } broken { label } later { note } } }", None),
    ("{ box(n: 2) { missing { label } later { note } } }", None),
    ("{ box(n: 3) { badLine { label value } later { note } } }", None),
    ("{ box { refused { label } top { label } } }", None),
    ("{ box { refusedSync { label } top { label } } }", None),
    ("{ box { allowed { label } top { label } } }", None),
    ("{ box { unsure { label } } }", None),
    ("{ box { unsureSync { label } } }", None),
    ("{ box(n: 2) { laterAllowed { label } } }", None),
    ("{ box(n: 3) { laterAllowed { label } } }", None),
    ("{ box(n: 2) { laterSync { label } } }", None),
    ("{ box { a: asks(index: 3) { value } b: asks(index: 30) { value } } }", None),
    ("{ box { boxes { laterAllowed { value } allowed { value } } } }", None),
    ("{ box { inner { n later { label } inner { n top { value } } } } }", None),
    ("{ box { boxes { n later { value } top { value } } } }", None),
    ("{ box { boxes { n broken { value } later { value } inner { later { value } } } } }", None),
    ("{ box { boxes { missing { value } } } }", None),
    ("{ box { boxes { badLine { label } maybe { label } } } }", None),
    ("{ box { thing { id name } boxes { thing { id } } } }", None),
    ("{ box { sought { label note value } } }", None),
    ("{ box { sought(thing: null, order: null, index: 2) { label note value } } }", None),
    ('{ box { sought(thing: "VGhpbmc6MQ==", order: {label: "x"}) { label note } } }', None),
    ('{ box { sought(order: {label: "x", value: 3}) { label note } } }', None),
    (
        "query($t: ID, $o: Order) { box { sought(thing: $t, order: $o) { label note } } }",
        {"t": None, "o": {"label": "y", "value": 2}},
    ),
    ("query($t: ID) { box { sought(thing: $t) { label note } } }", {"t": "VGhpbmc6Mg=="}),
    ("query($t: ID) { box { sought(thing: $t) { label note } } }", {"t": "not an id"}),
    ("query($t: ID) { box { sought(thing: $t) { label note } } }", {}),
    ("{ box { __typename n top { __typename label } } }", None),
    ("{ boxes { n later { label } } }", None),
    ("{ a: box(n: 1) { n } b: box(n: 2) { top { label } } }", None),
    (
        "query($w: Boolean!) { box { top @include(if: $w) { label } later { label } } }",
        {"w": False},
    ),
]


VARIABLE_DOCUMENT = """query($with: Boolean!) { page { edges { node {
    label ...V @include(if: $with) } } } } fragment V on Line { value note }"""


async def _answer(schema: strawberry.Schema, document: str, variables: Any = None) -> Any:
    result = await schema.execute(document, variable_values=variables)
    return result.data, [error.formatted for error in result.errors or []]


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_the_short_way_answers_as_graphql_core(document: str) -> None:
    stock, short = _schema(short=False), _schema(short=True)
    expected = await _answer(stock, document)
    # Twice: the second time from the plans kept across requests.
    assert await _answer(short, document) == expected
    assert await _answer(short, document) == expected


@pytest.mark.parametrize(("document", "variables"), NESTED)
async def test_fields_with_resolvers_answer_as_graphql_core_and_resolve_once(
    document: str, variables: Any
) -> None:
    stock, short = _schema(short=False), _schema(short=True)

    async def answer(schema: strawberry.Schema) -> tuple[Any, list[str]]:
        RESOLVED.clear()
        answered = await _answer(schema, document, variables)
        # graphql-core leaves the awaitables of a null's siblings to finish as tasks.
        for _ in range(5):
            await asyncio.sleep(0)
        return answered, sorted(RESOLVED)

    expected = await answer(stock)
    for _ in range(2):  # the second time from the plans kept across requests
        assert await answer(short) == expected


def test_resolvers_without_extensions_are_called_past_strawberrys_wrapper() -> None:
    """The documents above take both ways: resolvers called directly (`direct_calls`),
    and through strawberry's wrapper when a field has an extension (a permission)."""
    schema = _schema(short=True)
    box = cast(GraphQLObjectType, schema._schema.type_map["Box"])
    direct = cast(Any, schema.execution_context_class).direct
    assert {name for name, field in box.fields.items() if id(field) in direct} == {
        "top", "later", "pick", "maybe", "broken", "missing", "badLine", "inner", "boxes",
        "thing", "loaded", "refused", "refusedSync", "allowed", "unsure", "unsureSync",
        "laterAllowed", "laterSync", "asks", "sought",
    }  # fmt: skip


async def test_awaitables_of_one_level_are_awaited_together_for_dataloaders() -> None:
    """The loads of a list's items meet in one DataLoader batch, as with graphql-core."""
    document = "{ box { boxes { n loaded { value } inner { loaded { value } } } } }"
    answers, batched = [], []
    for short in (False, True):
        batches: list[list[int]] = []

        async def load(keys: list[int], batches: list[list[int]] = batches) -> list[int]:
            batches.append(keys)
            return [key * 2 for key in keys]

        schema = _schema(short=short)
        result = await schema.execute(document, context_value={"loader": DataLoader(load)})
        assert not result.errors
        answers.append(result.data)
        batched.append([sorted(keys) for keys in batches])
    assert answers[0] == answers[1]
    assert batched[0] == batched[1]
    assert len(batched[1]) <= 2


OUTCOME = "line { label value note } lines { label } done"
ORDER = {"label": "coffee", "value": 2}
MUTATIONS: list[tuple[str, Any, list[str]]] = [
    # (document, variables, the root resolvers it calls)
    (f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} }} }}", {"o": ORDER}, ["place"]),
    (f"mutation($o: Order!) {{ p: placeSync(order: $o) {{ {OUTCOME} }} }}", {"o": ORDER},
     ["placeSync"]),
    (f'mutation {{ place(order: {{label: "tea"}}) {{ {OUTCOME} __typename }} }}', None, ["place"]),
    (f"mutation($o: Order!) {{ placeMaybe(order: $o) {{ {OUTCOME} }} }}", {"o": {"label": "none"}},
     ["placeMaybe"]),
    (f"mutation($o: Order!) {{ placeBroken(order: $o) {{ {OUTCOME} }} }}",
     {"o": {"label": "raise"}}, ["placeBroken"]),
    (f"mutation($o: Order!) {{ placeBroken(order: $o) {{ {OUTCOME} }} }}",
     {"o": {"label": "graphql"}}, ["placeBroken"]),
    (f"mutation($o: Order!) {{ placeBroken(order: $o) {{ {OUTCOME} }} }}",
     {"o": {"label": "none"}}, ["placeBroken"]),
    (f"mutation($o: Order!) {{ placeBroken(order: $o) {{ {OUTCOME} }} }}",
     {"o": {"label": "null label"}}, ["placeBroken"]),
    (f"mutation($o: Order!) {{ placeRefused(order: $o) {{ {OUTCOME} }} }}", {"o": ORDER},
     []),  # refused before the resolver
    # Variables that do not coerce: nothing is called.
    (f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} }} }}", {"o": {"value": 1}}, []),
    (f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} }} }}", {"o": "coffee"}, []),
    # Answers with a resolver, several root fields, fragments, directives: the usual way.
    (f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} shout }} }}", {"o": ORDER},
     ["place"]),
    ("mutation($o: Order!) { a: place(order: $o) { done } b: placeSync(order: $o) "
     "{ done } }", {"o": ORDER}, ["place", "placeSync"]),
    ("mutation($o: Order!) { ...M } fragment M on Mutation { place(order: $o) { done } }",
     {"o": ORDER}, ["place"]),
    ("mutation($o: Order!, $w: Boolean!) { place(order: $o) { done line @include(if: $w)"
     " { label } } }", {"o": ORDER, "w": True}, ["place"]),
    ("mutation { __typename }", None, []),
]  # fmt: skip


@pytest.mark.parametrize(("document", "variables", "calls"), MUTATIONS)
async def test_one_root_field_answers_as_graphql_core_and_resolves_once(
    document: str, variables: Any, calls: list[str]
) -> None:
    stock, short = _schema(short=False), _schema(short=True)
    CALLS.clear()
    expected = await _answer(stock, document, variables)
    assert calls == CALLS
    for _ in range(2):  # the second time from the operation's root kept across requests
        CALLS.clear()
        assert await _answer(short, document, variables) == expected
        assert calls == CALLS


def _root_taken(schema: strawberry.Schema, document: str) -> bool:
    roots: dict[int, Any] = getattr(schema.execution_context_class, "roots")  # noqa: B009
    return any(
        root is not None and operation.loc.source.body == document
        for operation, root in roots.values()
    )


async def test_answers_of_one_root_field_take_the_short_way() -> None:
    schema = _schema(short=True)
    direct = f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} }} }}"
    resolved = f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} shout }} }}"
    query = f"{{ page {{ {PAGE} }} }}"
    nested = "{ box { boxes { n later { value } } } }"
    two_roots = "{ a: box { n } b: box { n } }"
    abstract = "{ nodes { id } }"
    directive = "query($w: Boolean!) { box { top @include(if: $w) { label } } }"
    taken = [(direct, {"o": ORDER}), (resolved, {"o": ORDER}), (query, None), (nested, None)]
    usual = [(two_roots, None), (abstract, None), (directive, {"w": True})]
    for document, variables in taken + usual:
        await _answer(schema, document, variables)
    assert [_root_taken(schema, document) for document, _ in taken] == [True] * len(taken)
    assert [_root_taken(schema, document) for document, _ in usual] == [False] * len(usual)


async def test_plans_follow_the_variables_of_directives() -> None:
    stock, short = _schema(short=False), _schema(short=True)
    for include in (True, False, True):
        variables = {"with": include}
        expected = await _answer(stock, VARIABLE_DOCUMENT, variables)
        assert await _answer(short, VARIABLE_DOCUMENT, variables) == expected


async def test_errors_in_plain_data_are_located_as_usual() -> None:
    data, errors = await _answer(_schema(short=True), f"{{ brokenNull {{ {PAGE} }} }}")
    assert data is None
    assert [error["path"] for error in errors] == [["brokenNull", "edges", 1, "node", "label"]]


def test_the_api_schema_takes_the_short_way() -> None:
    # A graphql-core whose internals moved fails here rather than silently losing it.
    assert SUPPORTED
    schema = create_schema(Settings())
    assert issubclass(schema.execution_context_class, AllianceExecutionContext)


def test_stock_relay_ids_are_leaves_and_custom_ones_are_not() -> None:
    schema = _schema(short=True)
    leaves: dict[int, Any] = getattr(schema.execution_context_class, "leaves")  # noqa: B009
    types: dict[str, Any] = dict(schema._schema.type_map)
    thing_id, custom_id = types["Thing"].fields["id"], types["Custom"].fields["id"]
    assert id(thing_id) in leaves
    assert id(custom_id) not in leaves
    attribute, global_id, nullable = leaves[id(thing_id)]
    assert (attribute, nullable) == ("code", False)
    assert global_id("b/2") == str(relay.GlobalID("Thing", "b/2"))


def test_nodes_in_plain_data_are_checked_by_class() -> None:
    schema = _schema(short=True)
    checked: dict[int, type] = getattr(schema.execution_context_class, "checked")  # noqa: B009
    types: dict[str, Any] = dict(schema._schema.type_map)
    assert checked[id(types["Thing"])] is Thing
    assert id(types["Line"]) not in checked  # no is_type_of at all
    api = create_schema(Settings())
    api_types: dict[str, Any] = dict(api._schema.type_map)
    assert id(api_types["LedgerEntry"]) in getattr(api.execution_context_class, "checked")  # noqa: B009


async def test_an_execution_leaves_no_garbage_for_the_cyclic_collector() -> None:
    """Each answer's executor is freed when the request is done, not by a GC pause."""
    import gc

    from schema import AllianceSchema
    from schema.policy import RequestPolicy

    schema = AllianceSchema(query=Query, mutation=Mutation, types=[Item, Thing, Custom],
                            config=StrawberryConfig(scalar_map=SCALARS))  # fmt: skip
    schema.policy, schema.plain = RequestPolicy(Settings()), True
    assert use_short_way(schema)
    place = f"mutation($o: Order!) {{ place(order: $o) {{ {OUTCOME} }} }}"
    documents = [
        (place, {"o": ORDER}),
        (f"{{ page {{ {PAGE} }} }}", None),
        ("{ __typename }", None),
    ]
    for document, variables in documents:  # warm: caches and plans made
        assert not (await schema.execute(document, variable_values=variables)).errors
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            for document, variables in documents:
                await schema.execute(document, variable_values=variables)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_objects_of_awaitless_classes_skip_the_awaitable_check() -> None:
    """Only classes none of whose instances graphql-core could find awaitable."""
    from graphql.pyutils import is_awaitable

    from schema.execution import _awaitless

    class Plain:
        pass

    class Awaits:
        def __await__(self) -> Any:
            yield None

    class Invents:
        def __getattr__(self, name: str) -> Any:
            return lambda: None

    class Looks:
        def __getattribute__(self, name: str) -> Any:
            return object.__getattribute__(self, name)

    assert _awaitless(Plain)
    assert _awaitless(Box)
    assert _awaitless(Line)
    assert not any(map(_awaitless, (Awaits, Invents, Looks)))
    assert is_awaitable(Awaits())
    assert is_awaitable(Invents())
    own = Plain()
    own.__await__ = lambda: iter(())  # type: ignore[attr-defined]
    assert is_awaitable(own)
    assert "__await__" in own.__dict__


@pytest.mark.parametrize(
    ("document", "uses"),
    [
        ("{ box { n } }", False),
        ("{ box(n: 3) { n } }", False),
        ('{ box { pick(index: 1, note: "x") { value } } }', False),
        ("query($i: Int!) { box(n: $i) { n } }", True),
        ("query($i: Int!) { a: box(n: [1, {b: [$i]}]) { n } }", True),
    ],
)
def test_arguments_without_variables_are_told_apart(document: str, uses: bool) -> None:
    """Only arguments written without variables are coerced once per document."""
    from graphql import FieldNode, parse

    from schema.execution import _uses_variables

    operation = parse(document).definitions[0]
    field = operation.selection_set.selections[0]  # type: ignore[attr-defined]
    assert isinstance(field, FieldNode)
    assert _uses_variables(field) is uses


async def test_nullable_arguments_are_converted_only_when_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An optional id or input left out (or null) is passed as it is; one given goes
    through strawberry's conversion (the answers themselves are compared above)."""
    import schema.execution as execution

    converted: list[dict[str, Any]] = []

    def counted(**kwargs: Any) -> Any:
        converted.append(kwargs["kwargs"])
        return get_arguments(**kwargs)

    get_arguments = execution.get_arguments
    monkeypatch.setattr(execution, "get_arguments", counted)
    short = _schema(short=True)
    for document in (
        "{ box { sought { label } } }",
        "{ box { sought(thing: null, order: null, index: 3) { label } } }",
    ):
        assert (await _answer(short, document))[1] == []
    assert converted == []
    answer = await _answer(short, '{ box { sought(thing: "VGhpbmc6MQ==") { label } } }')
    assert answer == ({"box": {"sought": {"label": "GlobalID:VGhpbmc6MQ=="}}}, [])
    assert converted == [{"thing": "VGhpbmc6MQ==", "order": None, "index": 0}]


async def test_literal_arguments_are_remembered_with_their_defaults() -> None:
    schema = _schema(short=True)
    document = '{ box(n: 4) { a: pick(index: 7) { value } b: pick(index: 8, note: "x") { note } } }'
    from schema.execution import _LITERAL_ARGUMENTS

    _LITERAL_ARGUMENTS.clear()
    for _ in range(3):
        result = await schema.execute(document)
        assert not result.errors
        assert result.data == {"box": {"a": {"value": 7}, "b": {"note": "x"}}}
    # This schema caches no document: each execution's nodes are new, and remembered anew.
    remembered = {tuple(sorted(args.items())) for _, _, args in _LITERAL_ARGUMENTS.values() if args}
    assert remembered == {
        (("n", 4),),
        (("index", 7), ("note", None)),
        (("index", 8), ("note", "x")),
    }
