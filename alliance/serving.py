"""Running the ASGI app in worker processes, one listening socket per worker.

uvicorn's supervisor shares one listening socket between its workers, and the
worker that wakes first accepts: a burst of keep-alive connections lands
unevenly (bench/ saw 5 / 27 connections on two workers), and the busier worker's
queue sets the latency tail. With SO_REUSEPORT each worker has its own socket
on the same port and the kernel spreads connections across them by hash.
This keeps uvicorn's supervision (health checks, restarts, signals) and only
changes which socket each worker gets.

Each connection's transport joins the writes of one loop turn (`OneWriteTransport`):
uvicorn writes a response's head and body separately, and a small answer then leaves
in two segments. Measured over HTTP at 32 clients (bench/RESULTS.md, 2026-11-26):
`{ __typename }` 13,400-14,700 -> 16,600-16,700 requests/s.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class ReusePortSupervisor(Multiprocess):
    def __init__(self, config: Config) -> None:
        self.slot_sockets = [
            reuse_port_socket(config.host, config.port) for _ in range(config.workers)
        ]
        super().__init__(config, sockets=[])

    def _process(self, slot: int) -> Process:
        return Process(self.config, [self.slot_sockets[slot]])

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            process = self._process(slot)
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._process(slot)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker %s failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("worker %s died; starting another", process.pid)
            replacement = self._process(slot)
            replacement.start()
            self.processes[slot] = replacement


def serve(config: Config) -> None:
    """Run `config` in `config.workers` processes (in this one when there is a single worker)."""
    if config.workers <= 1:
        import uvicorn

        uvicorn.Server(config).run()
        return
    ReusePortSupervisor(config).run()


class OneWriteTransport:
    """A transport that sends what is written in one turn of the event loop at once.

    uvicorn writes a response's status line and headers, then its body, each with its
    own `write`: two `send` calls, two TCP segments on the wire, and a client that
    may wake up for each. Writes are joined and sent on the loop's next turn (the
    same turn for everything already scheduled): a small response leaves in one
    segment. Everything else is the wrapped transport's.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        pending = sum(len(data) for data in self._pending or ())
        return pending + int(self._transport.get_write_buffer_size())

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def set_protocol(self, protocol: Any) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpToolsProtocol(_HttpToolsProtocol):
    """uvicorn's httptools protocol, writing each response in one piece."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))  # type: ignore[arg-type]
