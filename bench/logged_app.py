"""`python -m bench --configure-logging` serves this factory instead of gateway:app_factory.

Under `uvicorn --workers 2` (and under `alliance serve`, which calls configure_logging in
the supervisor only) the worker processes are spawned fresh and never configure logging,
so the app's JSON access log (ALLIANCE_ACCESS_LOG, on by default) is dropped at the
`logger.info` call. This wrapper configures logging in each worker first, as the app
presumably intends, so the benchmark can show what the access log costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from alliance.config import Settings
from alliance.logs import configure_logging


def app_factory() -> Callable[..., Awaitable[Any]]:
    import gateway

    configure_logging(Settings.from_env().log_level)
    return gateway.app_factory()
