"""Which PostgreSQL to use: the configured URL, or the embedded server in the data dir."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alliance.config import Settings
from alliance.db.embedded import DURABLE, EmbeddedPostgres

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "alliance"


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir / "pg", settings=DURABLE)


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield a URL to use; an embedded server started here is stopped on exit.

    A server already running in the data dir (say, under `alliance serve`) is
    reused and left running.
    """
    if settings.database_url:
        yield settings.database_url
        return
    server = embedded_server(settings)
    server.start()
    try:
        server.create_database(EMBEDDED_DATABASE)
        yield server.url(EMBEDDED_DATABASE)
    finally:
        server.stop()
