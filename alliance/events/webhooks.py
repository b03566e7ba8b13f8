"""Merchants' webhook endpoints: registration, signatures, the SSRF guard, redelivery.

A merchant registers an endpoint (URL, event types, secret). Every outbox event of
the merchant whose topic the endpoint takes becomes a delivery, sent by the
dispatcher (alliance/events/dispatcher.py) as an HTTP POST of the event as JSON with

    X-Alliance-Event-Id: <outbox id>
    X-Alliance-Timestamp: <unix seconds>
    X-Alliance-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

The receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares
in constant time, and refuses old timestamps (replays). `verify_signature` is the
reference implementation.

SSRF guard: in production mode an endpoint must be https and its host must resolve to
public addresses only (no loopback, private, link-local, multicast, reserved or
unspecified ones); checked at registration and again before each delivery (a name
may be re-pointed). Outside production (demo, tests) local receivers are allowed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select, text, update

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.auth.sealing import load_secret_key, seal, unseal
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import Forbidden, InvalidInput, InvalidTransition, NotFound
from alliance.events.models import WebhookDelivery, WebhookEndpoint
from alliance.validation import clean_text

TOPICS = frozenset(
    {
        "points.earned", "points.spent", "points.expired", "points.expiring", "points.adjusted",
        "points.exchanged", "points.held", "points.refunded", "points.reversed",
        "tier.changed", "appeal.updated", "statement.issued", "members.imported",
        "balances.imported",
    }
)  # fmt: skip
"""What an endpoint may subscribe to; `*` takes every topic, today's and later ones."""
MAX_ENDPOINTS_PER_MERCHANT = 20
_SEAL_CONTEXT = b"points-alliance/webhook-secret"


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: int
    merchant_id: int
    url: str
    event_types: list[str]
    status: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Registered:
    endpoint: EndpointView
    secret: str
    """Shown once, at registration."""


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    endpoint_id: int
    event_id: int
    topic: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptView:
    id: int
    delivery_id: int
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: datetime


class UnsafeDestination(InvalidInput):
    """The URL points where the server must not send requests (SSRF guard)."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify_signature(
    secret: bytes, timestamp: int, body: bytes, signature: str, *, now: float, tolerance: int = 300
) -> bool:
    """What a receiver does: the HMAC matches and the timestamp is recent."""
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_destination(url: str, settings: Settings) -> None:
    """Refuse URLs the server must not call (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http(s) URL with a host", field=("url",))
    if parts.username or parts.password:
        raise InvalidInput("url must not carry credentials", field=("url",))
    if not settings.production:
        return
    if parts.scheme != "https":
        raise UnsafeDestination("url must be https in production", field=("url",))
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
        )
    except OSError:
        raise UnsafeDestination("the url's host does not resolve", field=("url",)) from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or any(_blocked(address) for address in addresses):
        raise UnsafeDestination(
            "the url's host resolves to a private, loopback or otherwise non-public address",
            field=("url",),
        )


def _merchant_staff(actor: Actor) -> int:
    actor.require(Role.MERCHANT)
    assert actor.merchant_id is not None
    return actor.merchant_id


def _check_types(event_types: Sequence[str]) -> list[str]:
    cleaned = sorted(set(event_types))
    if not cleaned:
        raise InvalidInput("name at least one event type (or *)", field=("eventTypes",))
    unknown = [t for t in cleaned if t != "*" and t not in TOPICS]
    if unknown:
        raise InvalidInput(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(sorted(TOPICS))})",
            field=("eventTypes",),
        )
    return cleaned


async def register_endpoint(
    db: Database,
    actor: Actor,
    *,
    url: str,
    event_types: Sequence[str],
    secret: str | None = None,
) -> Registered:
    """A new endpoint of the merchant; its secret is generated unless given (≥ 32 chars)."""
    merchant_id = _merchant_staff(actor)
    url = clean_text(url, "url", max_length=2000)
    types = _check_types(event_types)
    if secret is None:
        secret = "whsec_" + secrets.token_urlsafe(32)
    elif len(secret) < 32 or len(secret) > 200:
        raise InvalidInput("secret must be 32 to 200 characters", field=("secret",))
    await check_destination(url, db.settings)
    sealed = seal(load_secret_key(db.settings), secret.encode(), associated_data=_SEAL_CONTEXT)
    async with db.transaction() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM webhook_endpoint WHERE merchant_id = :m AND status = 'active'"
            ),
            {"m": merchant_id},
        )
        if (count or 0) >= MAX_ENDPOINTS_PER_MERCHANT:
            raise InvalidInput(f"at most {MAX_ENDPOINTS_PER_MERCHANT} active endpoints")
        endpoint = WebhookEndpoint(
            merchant_id=merchant_id, url=url, event_types=types, secret_sealed=sealed,
            created_by=actor.subject,
        )  # fmt: skip
        session.add(endpoint)
        await session.flush()
        await session.refresh(endpoint)
        await record_audit(
            session, actor, action="webhook.register", target=f"webhook_endpoint:{endpoint.id}",
            after={"url": url, "event_types": types}, merchant_id=merchant_id,
        )  # fmt: skip
        return Registered(_view(endpoint), secret)


async def disable_endpoint(db: Database, actor: Actor, *, endpoint_id: int) -> EndpointView:
    """No new deliveries; pending ones stay, and go out if it is registered again."""
    merchant_id = _merchant_staff(actor)
    async with db.transaction() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None or endpoint.merchant_id != merchant_id:
            raise NotFound("webhook endpoint not found", field=("endpointId",))
        if endpoint.status != "active":
            raise InvalidTransition("the endpoint is already disabled", field=("endpointId",))
        endpoint.status = "disabled"
        await record_audit(
            session, actor, action="webhook.disable", target=f"webhook_endpoint:{endpoint_id}",
            before={"status": "active"}, after={"status": "disabled"}, merchant_id=merchant_id,
        )  # fmt: skip
        await session.flush()
        return _view(endpoint)


async def redeliver(db: Database, actor: Actor, *, delivery_id: int) -> DeliveryView:
    """Send a delivery again now (a dead one, or a delivered one the receiver lost).
    It starts a fresh series of attempts; the member's order is not held for it."""
    merchant_id = _merchant_staff(actor)
    async with db.transaction() as session:
        delivery = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.merchant_id != merchant_id:
            raise NotFound("delivery not found", field=("deliveryId",))
        if delivery.status == "pending":
            raise InvalidTransition("the delivery is still pending", field=("deliveryId",))
        before = delivery.status
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(status="pending", attempts=0, next_attempt_at=text("now()"), leased_until=None)
        )
        await record_audit(
            session, actor, action="webhook.redeliver", target=f"webhook_delivery:{delivery_id}",
            before={"status": before}, after={"status": "pending"}, merchant_id=merchant_id,
        )  # fmt: skip
    return (await deliveries_by_id(db, actor, [delivery_id]))[delivery_id]


def endpoint_secret(settings: Settings, sealed: bytes) -> bytes:
    return unseal(load_secret_key(settings), sealed, associated_data=_SEAL_CONTEXT)


def _view(e: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        e.id, e.merchant_id, e.url, list(e.event_types), e.status, e.created_by, e.created_at
    )


def _reader(actor: Actor) -> int | None:
    """The merchant whose webhooks the actor reads (None: all, for operator and auditor)."""
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return None
    if actor.role is Role.MERCHANT and actor.merchant_id is not None:
        return actor.merchant_id
    raise Forbidden("webhooks are for merchant staff, operators and auditors")


async def endpoints_page(
    db: Database, actor: Actor, *, first: int, after: int | None
) -> tuple[list[EndpointView], bool]:
    merchant_id = _reader(actor)
    stmt = select(WebhookEndpoint).order_by(WebhookEndpoint.id).limit(first + 1)
    if merchant_id is not None:
        stmt = stmt.where(WebhookEndpoint.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(WebhookEndpoint.id > after)
    async with db.transaction() as session:
        rows = [_view(e) for e in await session.scalars(stmt)]
    return rows[:first], len(rows) > first


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, o.topic, d.status, d.attempts, d.next_attempt_at,"
    " d.last_error, d.delivered_at, d.created_at"
)


async def deliveries_page(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    endpoint_id: int | None = None,
    status: str | None = None,
) -> tuple[list[DeliveryView], bool]:
    """Newest first."""
    merchant_id = _reader(actor)
    rows = await db.fetch_all(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_delivery d"
        " JOIN outbox_event o ON o.id = d.event_id"
        " WHERE (%(merchant)s::bigint IS NULL OR d.merchant_id = %(merchant)s::bigint)"
        " AND (%(endpoint)s::bigint IS NULL OR d.endpoint_id = %(endpoint)s::bigint)"
        " AND (%(status)s::text IS NULL OR d.status = %(status)s::text)"
        " AND d.id < coalesce(%(after)s::bigint, 9223372036854775807)"
        " ORDER BY d.id DESC LIMIT %(limit)s",
        {"merchant": merchant_id, "endpoint": endpoint_id, "status": status, "after": after,
         "limit": first + 1},
    )  # fmt: skip
    return [DeliveryView(*row) for row in rows[:first]], len(rows) > first


async def deliveries_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, DeliveryView]:
    try:
        merchant_id = _reader(actor)
    except Forbidden:
        return {}
    rows = await db.fetch_all(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_delivery d"
        " JOIN outbox_event o ON o.id = d.event_id WHERE d.id = ANY(%(ids)s)"
        " AND (%(merchant)s::bigint IS NULL OR d.merchant_id = %(merchant)s::bigint)",
        {"ids": list(ids), "merchant": merchant_id},
    )
    return {row[0]: DeliveryView(*row) for row in rows}


async def attempts_of_deliveries(
    db: Database, actor: Actor, delivery_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, tuple[list[AttemptView], bool]]:
    """One page of attempts per delivery, oldest first, in one statement."""
    try:
        merchant_id = _reader(actor)
    except Forbidden:
        return {delivery_id: ([], False) for delivery_id in delivery_ids}
    rows = await db.fetch_all(
        "SELECT a.id, a.delivery_id, a.status_code, a.error, a.duration_ms, a.created_at"
        " FROM unnest(%(ids)s::bigint[]) AS parent(id)"
        " JOIN webhook_delivery d ON d.id = parent.id"
        " AND (%(merchant)s::bigint IS NULL OR d.merchant_id = %(merchant)s::bigint)"
        " CROSS JOIN LATERAL (SELECT * FROM webhook_attempt x WHERE x.delivery_id = d.id"
        " AND x.id > coalesce(%(after)s::bigint, 0) ORDER BY x.id LIMIT %(limit)s) a",
        {"ids": list(delivery_ids), "merchant": merchant_id, "after": after, "limit": first + 1},
    )
    grouped: dict[int, list[AttemptView]] = {delivery_id: [] for delivery_id in delivery_ids}
    for row in rows:
        grouped[row[1]].append(AttemptView(*row))
    return {key: (items[:first], len(items) > first) for key, items in grouped.items()}
