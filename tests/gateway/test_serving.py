"""The server's HTTP protocol writes each response in one piece (alliance/serving.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _StockProtocol

from alliance.serving import HttpToolsProtocol, OneWriteTransport


class Recorder:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 5

    def set_protocol(self, protocol: Any) -> None:
        self.events.append(f"protocol {protocol}")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4000)}.get(name, default)


async def _turn() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_turn_leave_together_on_the_next() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder)
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"hello")
    assert recorder.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nhello") + 5
    await _turn()
    assert recorder.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
    transport.write(b"more")
    await _turn()
    assert recorder.writes[1:] == [b"more"]
    await _turn()  # nothing pending: nothing written
    assert len(recorder.writes) == 2


async def test_close_and_eof_send_what_is_pending_first_and_abort_drops_it() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder)
    transport.write(b"last words")
    transport.write_eof()
    assert (recorder.writes, recorder.events) == ([b"last words"], ["eof"])
    transport.write(b"bye")
    transport.close()
    assert (recorder.writes[1:], recorder.events[1:]) == ([b"bye"], ["close"])
    await _turn()  # the flush scheduled by the write finds nothing left
    assert len(recorder.writes) == 2

    aborted = Recorder()
    transport = OneWriteTransport(aborted)
    transport.write(b"never")
    transport.abort()
    await _turn()
    assert (aborted.writes, aborted.events) == ([], ["abort"])


async def test_nothing_is_written_to_a_closing_transport_and_the_rest_is_the_wrapped_ones() -> None:
    recorder = Recorder()
    transport = OneWriteTransport(recorder)
    transport.write(b"late")
    recorder.closing = True  # the peer went away meanwhile
    await _turn()
    assert recorder.writes == []
    assert transport.get_extra_info("peername") == ("127.0.0.1", 4000)
    assert transport.is_closing()
    other = Recorder()
    handover = OneWriteTransport(other)
    handover.write(b"101 Switching Protocols")
    handover.set_protocol("websocket")  # an upgrade: what was written goes first
    assert (other.writes, other.events) == ([b"101 Switching Protocols"], ["protocol websocket"])


# ---------------------------------------------------------------- a live server


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stream":  # chunks with the loop turning between them
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            await send({"type": "http.response.body", "body": b"chunk %d;" % n, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * 2_000_000 if path == "/large" else b'{"ok":true}'
    length = str(len(body)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


SOCKET_WRITES: list[bytes] = []
"""What reached the sockets of the servers below, write by write."""


class CountingTransport:
    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        SOCKET_WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Counted(HttpToolsProtocol):
    """Ours, with the socket's writes counted under the one-write transport."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(CountingTransport(transport))  # type: ignore[arg-type]


class CountedStock(_StockProtocol):
    """uvicorn's own, counted the same way: the comparison."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(CountingTransport(transport))  # type: ignore[arg-type]


async def _serve(protocol: type) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", http=protocol
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to await)
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async for url in _serve(Counted):
        yield url


@pytest.fixture
async def stock_base() -> AsyncIterator[str]:
    async for url in _serve(CountedStock):
        yield url


async def _writes_of_one_response(base: str) -> list[bytes]:
    async with httpx.AsyncClient(base_url=base) as client:
        await client.get("/")  # the connection is open and warm
        SOCKET_WRITES.clear()
        response = await client.get("/")
        assert response.json() == {"ok": True}
    return list(SOCKET_WRITES)


async def test_a_response_leaves_in_one_write(base: str, stock_base: str) -> None:
    writes = await _writes_of_one_response(base)
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"ok":true}')
    assert len(await _writes_of_one_response(stock_base)) == 2  # uvicorn's: head, then body


async def test_keep_alive_streams_and_large_bodies_are_served_whole(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(3):  # one connection, kept alive
            response = await client.get("/")
            assert (response.status_code, response.json()) == (200, {"ok": True})
        streamed = await client.get("/stream")
        assert streamed.text == "chunk 0;chunk 1;chunk 2;"
        large = await client.get("/large")
        assert large.content == b"x" * 2_000_000
