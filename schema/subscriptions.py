"""GraphQL subscriptions over graphql-transport-ws: a member's own events, a merchant's
event stream, fed from the outbox and resumable from a cursor (the last event id)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Self

import strawberry
from graphql import GraphQLError
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from alliance.errors import DomainError
from alliance.events.stream import StreamEvent, follow_events
from schema.context import Info
from schema.errors import api_error
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt

authenticated: list[type[BasePermission]] = [IsAuthenticated]
log = logging.getLogger("alliance.graphql")


@strawberry.type(description="An outbox event: the same document a webhook receives.")
class Event:
    id: BigInt = strawberry.field(description="The cursor: resume with `after: id`.")
    topic: str
    aggregate: str | None = strawberry.field(description="`member:<id>` or `merchant:<id>`.")
    sequence: BigInt | None = strawberry.field(description="1, 2, 3… within its aggregate.")
    data: JSON
    created_at: datetime

    @classmethod
    def from_record(cls, e: StreamEvent) -> Self:
        return cls(
            id=BigInt(e.id), topic=e.topic, aggregate=e.aggregate,
            sequence=None if e.sequence is None else BigInt(e.sequence), data=JSON(e.payload),
            created_at=e.created_at,
        )  # fmt: skip


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=authenticated,
        description="Events as they happen: a member token gets its own, a merchant token "
        "its merchant's. `after`: the last event id you saw (resume after a reconnect); "
        "none: from now. `topics`: only these (e.g. points.earned).",
    )
    async def events(
        self, info: Info, after: BigInt | None = None, topics: list[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        # Over a websocket, errors skip the HTTP view's coding and masking: do it here.
        try:
            async for event in follow_events(
                info.context.db, info.context.actor, after=after,
                topics=None if topics is None else frozenset(topics),
            ):  # fmt: skip
                yield Event.from_record(event)
        except DomainError as refused:
            raise api_error(refused.message, refused.code.value) from None
        except GraphQLError:
            raise
        except Exception:
            log.exception("event stream failed")
            raise api_error("internal error: the event stream stopped; resubscribe with "
                            "`after`", "INTERNAL_SERVER_ERROR") from None  # fmt: skip
