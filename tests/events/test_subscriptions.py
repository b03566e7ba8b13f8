"""Subscriptions over graphql-transport-ws with a real websocket client against the app
served by uvicorn on a local port: events of mutations made by another client arrive,
scoped to the token, and a reconnect resumes from the last event id."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets

from alliance.auth.clients import create_client, get_client
from alliance.auth.models import Role
from alliance.auth.oauth import member_actor
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from alliance.members.queries import MembershipRecord
from alliance.serving import HttpToolsProtocol
from gateway import create_app
from tests.factories import make_membership, make_program
from tests.graphql.helpers import gid

SUBSCRIBE = (
    "subscription($after: BigInt) { events(after: $after) { id topic aggregate sequence data } }"
)
AWARD = """mutation($m: ID!, $k: String!) { awardPoints(input: {membershipId: $m, points: 7,
  reason: "ws", idempotencyKey: $k}) { entry { points } userErrors { code } } }"""


@dataclass
class Server:
    base: str
    ws: str


@pytest.fixture
async def server(db: Database) -> AsyncIterator[Server]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(replace(db.settings, jobs=False, access_log=False), db=db)
    # The protocol `alliance serve` runs: the upgrade hands its one-write transport over.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", http=HttpToolsProtocol)  # fmt: skip
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    while not running.started:  # noqa: ASYNC110 (uvicorn offers no event to await)
        await asyncio.sleep(0.01)
    yield Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql")
    running.should_exit = True
    await task


@dataclass
class Shop:
    merchant_token: str
    member_token: str
    membership: MembershipRecord
    neighbour: MembershipRecord


@pytest.fixture
async def shop(db: Database) -> Shop:
    program = await make_program(db)
    membership = await make_membership(db, program)
    neighbour = await make_membership(db, program)
    client_id, _ = await create_client(
        db, name="app", role=Role.MERCHANT, merchant_id=program.merchant_id
    )
    record = await get_client(db, client_id)
    assert record is not None
    merchant_token, _ = await issue_access_token(db, actor=record.actor())
    member_token, _ = await issue_access_token(
        db, actor=await member_actor(db, record, membership.id)
    )
    return Shop(merchant_token, member_token, membership, neighbour)


async def _open(url: str, token: str | None) -> Any:
    socket_ = await websockets.connect(
        url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    )
    payload = {} if token is None else {"Authorization": f"Bearer {token}"}
    await socket_.send(orjson.dumps({"type": "connection_init", "payload": payload}).decode())
    return socket_


async def _subscribe(socket_: Any, after: int | None = None) -> None:
    ack = orjson.loads(await asyncio.wait_for(socket_.recv(), 5))
    assert ack["type"] == "connection_ack"
    await socket_.send(orjson.dumps({
        "id": "1", "type": "subscribe",
        "payload": {"query": SUBSCRIBE, "variables": {"after": after}},
    }).decode())  # fmt: skip


async def _next(socket_: Any) -> dict[str, Any]:
    message = orjson.loads(await asyncio.wait_for(socket_.recv(), 10))
    assert message["type"] == "next", message
    event: dict[str, Any] = message["payload"]["data"]["events"]
    return event


async def _award(server: Server, token: str, membership: MembershipRecord, key: str) -> None:
    async with httpx.AsyncClient(base_url=server.base) as client:
        response = await client.post(
            "/graphql",
            json={"query": AWARD, "variables": {"m": gid("Membership", membership.id), "k": key}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.json()["data"]["awardPoints"]["userErrors"] == []


async def test_a_member_hears_of_its_own_points_and_resumes(
    db: Database, server: Server, shop: Shop
) -> None:
    member = await _open(server.ws, shop.member_token)
    await _subscribe(member)
    await asyncio.sleep(0.3)  # the stream has taken its starting point
    await _award(server, shop.merchant_token, shop.neighbour, "n-1")  # not theirs
    await _award(server, shop.merchant_token, shop.membership, "m-1")
    first = await _next(member)
    assert first["topic"] == "points.earned"
    assert first["aggregate"] == f"member:{shop.membership.member_id}"
    assert first["data"]["membership_id"] == shop.membership.id
    await member.close()

    await _award(server, shop.merchant_token, shop.membership, "m-2")  # while away
    again = await _open(server.ws, shop.member_token)
    await _subscribe(again, after=int(first["id"]))
    missed = await _next(again)
    assert missed["sequence"] == first["sequence"] + 1
    assert missed["data"]["membership_id"] == shop.membership.id
    await again.close()


async def test_a_merchant_stream_has_every_member(db: Database, server: Server, shop: Shop) -> None:
    merchant = await _open(server.ws, shop.merchant_token)
    await _subscribe(merchant, after=0)
    await _award(server, shop.merchant_token, shop.neighbour, "n-1")
    await _award(server, shop.merchant_token, shop.membership, "m-1")
    seen = {(await _next(merchant))["data"]["membership_id"] for _ in range(2)}
    assert seen == {shop.neighbour.id, shop.membership.id}
    await merchant.close()


async def test_no_token_no_connection(db: Database, server: Server) -> None:
    socket_ = await _open(server.ws, None)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(socket_.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_only_members_and_merchants_follow(db: Database, server: Server) -> None:
    client_id, _ = await create_client(db, name="ops", role=Role.OPERATOR)
    record = await get_client(db, client_id)
    assert record is not None
    token, _ = await issue_access_token(db, actor=record.actor())
    operator = await _open(server.ws, token)
    await _subscribe(operator)
    message = orjson.loads(await asyncio.wait_for(operator.recv(), 5))
    assert message["type"] in ("error", "next"), message
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "FORBIDDEN", message
    await operator.close()
