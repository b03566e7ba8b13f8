"""GraphQL for webhooks: endpoints, their deliveries and every attempt, redelivery."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.events import webhooks
from alliance.events.webhooks import AttemptView, DeliveryView, EndpointView
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import PageArgs, forget
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import connection_of, load_nodes, node_pk, page_connection

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="A merchant's URL that receives signed event POSTs.")
class WebhookEndpoint(relay.Node):
    id: relay.NodeID[int]
    url: str
    event_types: list[str] = strawberry.field(description="Topics it takes; `*`: all.")
    status: str = strawberry.field(description="active or disabled.")
    created_by: str
    created_at: datetime

    @classmethod
    def from_record(cls, r: EndpointView) -> Self:
        return cls(id=r.id, url=r.url, event_types=r.event_types, status=r.status,
                   created_by=r.created_by, created_at=r.created_at)  # fmt: skip


@strawberry.type(name="WebhookEndpointConnection")
class WebhookEndpointConnection(relay.Connection[WebhookEndpoint]):
    pass


@strawberry.type(description="One HTTP attempt of a delivery.")
class WebhookAttempt:
    id: strawberry.Private[int]
    status_code: int | None = strawberry.field(description="Null: no HTTP answer.")
    error: str | None
    duration_ms: int
    created_at: datetime

    @classmethod
    def from_record(cls, r: AttemptView) -> Self:
        return cls(id=r.id, status_code=r.status_code, error=r.error,
                   duration_ms=r.duration_ms, created_at=r.created_at)  # fmt: skip


@strawberry.type(name="WebhookAttemptConnection")
class WebhookAttemptConnection(relay.Connection[WebhookAttempt]):  # type: ignore[type-var]
    pass


@strawberry.type(description="One event for one endpoint: pending, delivered or dead.")
class WebhookDelivery(relay.Node):
    id: relay.NodeID[int]
    endpoint_id: strawberry.Private[int]
    event_id: BigInt = strawberry.field(description="The outbox event (X-Alliance-Event-Id).")
    topic: str
    status: str
    attempts: int = strawberry.field(description="Failed or successful tries so far.")
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, r: DeliveryView) -> Self:
        return cls(
            id=r.id, endpoint_id=r.endpoint_id, event_id=BigInt(r.event_id), topic=r.topic,
            status=r.status, attempts=r.attempts, next_attempt_at=r.next_attempt_at,
            last_error=r.last_error, delivered_at=r.delivered_at, created_at=r.created_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.webhook_delivery, node_ids, cls.from_record)

    @strawberry.field(description="Every attempt, oldest first.")
    async def attempt_log(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> WebhookAttemptConnection:
        args = PageArgs(check_first(first), decode_cursor(after))
        return await connection_of(
            info.context.loaders.attempts_of_delivery, self.id, args, WebhookAttemptConnection,
            WebhookAttempt.from_record, lambda a: a.id,
        )  # fmt: skip


@strawberry.type(name="WebhookDeliveryConnection")
class WebhookDeliveryConnection(relay.Connection[WebhookDelivery]):
    pass


@strawberry.input
class RegisterWebhookEndpointInput:
    url: str
    event_types: list[str] = strawberry.field(description='e.g. ["points.earned"], or ["*"].')
    secret: str | None = strawberry.field(
        default=None, description="32+ characters; generated when absent (shown once)."
    )


@strawberry.type
class RegisterWebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = None
    secret: str | None = strawberry.field(
        default=None, description="The HMAC key: keep it, it is not shown again."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class DisableWebhookEndpointInput:
    endpoint_id: relay.GlobalID


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RedeliverWebhookInput:
    delivery_id: relay.GlobalID


@strawberry.type
class RedeliverWebhookPayload:
    delivery: WebhookDelivery | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Receive your merchant's events at a URL, signed with HMAC-SHA256 (merchant).",
    )
    async def register_webhook_endpoint(
        self, info: Info, input: RegisterWebhookEndpointInput
    ) -> RegisterWebhookEndpointPayload:
        async def run() -> RegisterWebhookEndpointPayload:
            done = await webhooks.register_endpoint(
                info.context.db, info.context.actor, url=input.url,
                event_types=input.event_types, secret=input.secret,
            )  # fmt: skip
            return RegisterWebhookEndpointPayload(
                endpoint=WebhookEndpoint.from_record(done.endpoint), secret=done.secret
            )

        return await mutate(RegisterWebhookEndpointPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated, description="Stop new deliveries to an endpoint."
    )
    async def disable_webhook_endpoint(
        self, info: Info, input: DisableWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        async def run() -> WebhookEndpointPayload:
            done = await webhooks.disable_endpoint(
                info.context.db, info.context.actor,
                endpoint_id=node_pk(input.endpoint_id, WebhookEndpoint, "endpointId"),
            )  # fmt: skip
            return WebhookEndpointPayload(endpoint=WebhookEndpoint.from_record(done))

        return await mutate(WebhookEndpointPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Send a dead (or delivered) delivery again, with fresh attempts.",
    )
    async def redeliver_webhook(
        self, info: Info, input: RedeliverWebhookInput
    ) -> RedeliverWebhookPayload:
        async def run() -> RedeliverWebhookPayload:
            delivery_id = node_pk(input.delivery_id, WebhookDelivery, "deliveryId")
            done = await webhooks.redeliver(
                info.context.db, info.context.actor, delivery_id=delivery_id
            )
            forget(info.context.loaders.webhook_delivery, delivery_id)
            return RedeliverWebhookPayload(delivery=WebhookDelivery.from_record(done))

        return await mutate(RedeliverWebhookPayload, run)


@strawberry.type
class WebhookQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="Webhook endpoints (merchant: its own; operator, auditor: all).",
    )
    async def webhook_endpoints(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> WebhookEndpointConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await webhooks.endpoints_page(
            info.context.db, info.context.actor, first=first, after=after_key
        )
        return page_connection(
            WebhookEndpointConnection, items, more, WebhookEndpoint.from_record, after=after_key
        )

    @strawberry.field(
        permission_classes=authenticated,
        description="Deliveries, newest first, with their attempts.",
    )
    async def webhook_deliveries(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        endpoint_id: relay.GlobalID | None = None,
        status: str | None = None,
    ) -> WebhookDeliveryConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await webhooks.deliveries_page(
            info.context.db, info.context.actor, first=first, after=after_key,
            endpoint_id=None if endpoint_id is None
            else node_pk(endpoint_id, WebhookEndpoint, "endpointId"),
            status=status,
        )  # fmt: skip
        return page_connection(
            WebhookDeliveryConnection, items, more, WebhookDelivery.from_record, after=after_key
        )
