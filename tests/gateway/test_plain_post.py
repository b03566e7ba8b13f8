"""The endpoint answers a plain JSON POST itself (GraphQLEndpoint._post): every answer must
be the one strawberry's view gives for the same request, byte for byte in the body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from alliance.db.engine import Database
from gateway import GraphQLEndpoint, GraphQLView, create_app

JSON = "application/json"
TYPED = "application/graphql-response+json"
MERCHANTS = "query M($first: Int) { merchants(first: $first) { edges { node { id name } } } }"

BAD_VARIABLE = orjson.dumps({"query": MERCHANTS, "variables": {"first": "x"}})
TWO = "query A { __typename } query B { x: __typename }"

REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("typename", {}, b'{"query":"{ __typename }"}'),
    ("variables", {}, orjson.dumps({"query": MERCHANTS, "variables": {"first": 2}})),
    ("null members", {}, b'{"query":"{ __typename }","variables":null,"operationName":null}'),
    ("extensions", {}, b'{"query":"{ __typename }","extensions":{"x":1}}'),
    ("charset", {"content-type": f"{JSON}; charset=utf-8"}, b'{"query":"{ __typename }"}'),
    ("syntax error", {}, b'{"query":"{ __typename"}'),
    ("syntax error, typed", {"accept": TYPED}, b'{"query":"{ __typename"}'),
    ("invalid", {}, b'{"query":"{ nope }"}'),
    ("invalid, typed", {"accept": TYPED}, b'{"query":"{ nope }"}'),
    ("success, typed", {"accept": f"{TYPED}, {JSON};q=0.9"}, b'{"query":"{ __typename }"}'),
    ("bad variable", {}, BAD_VARIABLE),
    ("bad variable, typed", {"accept": TYPED}, BAD_VARIABLE),
    ("unauthenticated field", {}, b'{"query":"{ viewer { membership { id } } }"}'),
    ("unknown operation", {}, b'{"query":"query A { __typename }","operationName":"B"}'),
    ("ambiguous operations", {}, orjson.dumps({"query": TWO})),
    ("chosen operation", {}, orjson.dumps({"query": TWO, "operationName": "B"})),
    ("not json", {}, b"{nope"),
    ("batch", {}, b'[{"query":"{ __typename }"}]'),
    ("scalar body", {}, b"42"),
    ("query not a string", {}, b'{"query":42}'),
    ("empty query", {}, b'{"query":""}'),
    ("no query", {}, b'{"variables":{}}'),
    ("variables not an object", {}, b'{"query":"{ __typename }","variables":[1]}'),
    ("operationName not a string", {}, b'{"query":"{ __typename }","operationName":1}'),
    ("text body", {"content-type": "text/plain"}, b'{"query":"{ __typename }"}'),
    ("no content type", {"content-type": ""}, b'{"query":"{ __typename }"}'),
    ("multipart accept", {"accept": "multipart/mixed"}, b'{"query":"{ __typename }"}'),
]  # fmt: skip


@pytest.fixture
async def clients(
    db: Database, operator_token: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """One client on the app as shipped, one on an app whose endpoint hands every POST to
    strawberry's view (the long way)."""
    short, long = create_app(db.settings, db=db), create_app(db.settings, db=db)
    endpoint = _endpoint(long)
    endpoint._post = endpoint.view  # type: ignore[method-assign]
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=short), base_url="http://t") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=long), base_url="http://t") as b,
    ):
        yield a, b


def _endpoint(app: Any) -> GraphQLEndpoint:
    while not hasattr(app, "routes"):
        app = app.app
    for route in app.routes:
        if isinstance(getattr(route, "endpoint", None), GraphQLEndpoint):
            return route.endpoint
    raise AssertionError("no GraphQL endpoint")


@pytest.mark.parametrize(("name", "headers", "body"), REQUESTS, ids=[r[0] for r in REQUESTS])
@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "anonymous"])
async def test_the_same_answer_as_the_view(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    operator_token: str,
    name: str,
    headers: dict[str, str],
    body: bytes,
    authenticated: bool,
) -> None:
    sent = {"content-type": JSON, "x-request-id": "same", **headers}
    if authenticated:
        sent["authorization"] = f"Bearer {operator_token}"
    mine, views = [await client.post("/graphql", content=body, headers=sent) for client in clients]
    assert mine.status_code == views.status_code, (mine.text, views.text)
    assert mine.content == views.content
    for header in ("content-type", "content-length", "retry-after"):
        assert mine.headers.get(header) == views.headers.get(header), header


async def test_a_mutation_takes_the_short_way_and_writes_once(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    operator_token: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The short way really answers (this test fails if every POST went to the view), and a
    mutation runs once."""
    short, _ = clients
    calls = 0
    stock = GraphQLView.__call__

    async def counting(self: GraphQLView, *args: Any) -> None:
        nonlocal calls
        calls += 1
        await stock(self, *args)

    monkeypatch.setattr(GraphQLView, "__call__", counting)
    mutation = (
        'mutation { createMerchant(input: {name: "Plain Post Café", code: "plain-post"}) '
        "{ merchant { name } userErrors { code } } }"
    )
    answer = await short.post(
        "/graphql",
        json={"query": mutation},
        headers={"authorization": f"Bearer {operator_token}"},
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "data": {"createMerchant": {"merchant": {"name": "Plain Post Café"}, "userErrors": []}}
    }
    assert calls == 0
    row = await db.fetch_one("SELECT count(*) FROM merchant WHERE code = 'plain-post'")
    assert row is not None
    assert row[0] == 1
    await short.post("/graphql", content=b"[]", headers={"content-type": JSON})
    assert calls == 1


async def test_a_subscription_wants_a_stream(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], operator_token: str
) -> None:
    """Executed as one JSON answer, a subscription could only fail (an internal error, as
    strawberry's view answers it): the endpoint says what to do instead."""
    answer = await clients[0].post(
        "/graphql",
        json={"query": "subscription { events { __typename } }"},
        headers={"authorization": f"Bearer {operator_token}"},
    )
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error["extensions"] == {"code": "BAD_REQUEST"}
    assert "graphql-transport-ws" in error["message"]


async def test_a_subscription_asking_for_multipart_is_refused_too(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], operator_token: str
) -> None:
    """The view's way (not a plain request): a clear 400, not an internal error."""
    answer = await clients[0].post(
        "/graphql",
        json={"query": "subscription { events { __typename } }"},
        headers={
            "authorization": f"Bearer {operator_token}",
            "accept": "multipart/mixed;subscriptionSpec=1.0, application/json",
        },
    )
    assert answer.status_code == 400
    assert "subscriptions are not allowed" in answer.text
