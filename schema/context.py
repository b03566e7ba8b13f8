"""The per-request context: who is asking, the database, and lazily built loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import strawberry

from alliance.auth.actor import Actor
from alliance.config import Settings
from alliance.db.engine import Database
from schema.errors import unauthenticated

if TYPE_CHECKING:
    from schema.loaders import Loaders


@dataclass(slots=True)
class Context:
    db: Database
    settings: Settings
    viewer: Actor | None
    request_id: str | None = None
    _loaders: Loaders | None = field(default=None)
    connection_params: dict[str, object] | None = None
    """A websocket's connection_init payload (graphql-transport-ws): its token."""

    @property
    def actor(self) -> Actor:
        """The authenticated actor; GraphQL error UNAUTHENTICATED when there is none."""
        if self.viewer is None:
            raise unauthenticated()
        return self.viewer

    @property
    def loaders(self) -> Loaders:
        # Built on first use: a request that touches no relation pays nothing for them.
        if self._loaders is None:
            from schema.loaders import Loaders

            self._loaders = Loaders(self.db, self.actor)
        return self._loaders


Info = strawberry.Info[Context, None]
