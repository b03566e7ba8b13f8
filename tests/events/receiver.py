"""A webhook receiver on a real port: uvicorn serving a Starlette app in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    event_id: int
    timestamp: int
    signature: str
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    fail_every: int = 0
    """Answer 500 to every n-th request (0: never)."""
    requests: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _hook(self, request: Request) -> Response:
        self.requests += 1
        body = await request.body()
        if self.fail_every and self.requests % self.fail_every == 0:
            return Response("try later", status_code=500)
        self.received.append(
            Received(
                int(request.headers["x-alliance-event-id"]),
                int(request.headers["x-alliance-timestamp"]),
                request.headers["x-alliance-signature"],
                body,
            )
        )
        return Response("ok")

    def start(self) -> None:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None

    def ids(self) -> list[int]:
        return [r.event_id for r in self.received]
