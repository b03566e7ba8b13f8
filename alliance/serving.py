"""Running the ASGI app in worker processes, one listening socket per worker.

uvicorn's supervisor shares one listening socket between its workers, and the
worker that wakes first accepts: a burst of keep-alive connections lands
unevenly (bench/ saw 5 / 27 connections on two workers), and the busier worker's
queue sets the latency tail. With SO_REUSEPORT each worker has its own socket
on the same port and the kernel spreads connections across them by hash.
This keeps uvicorn's supervision (health checks, restarts, signals) and only
changes which socket each worker gets.
"""

from __future__ import annotations

import socket

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
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
