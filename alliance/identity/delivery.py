"""Delivering one-time codes: a pluggable channel per identifier kind.

The default channel writes the message to the transactional outbox (topic
`identity.code`), in the same transaction as the verification, so it works on any
machine: an SMS or e-mail provider plugs in as a channel of its own (`set_channel`),
or as a worker that relays these outbox events. The message in the outbox is sealed
(AES-GCM under the identity key, bound to its verification id): neither the code nor
the address is stored in the clear; `delivered_code` opens it for the demo and tests.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.db.engine import Database
from alliance.identity.identifiers import Keyring, keyring, mask
from alliance.identity.models import IdentifierKind

TOPIC = "identity.code"


@dataclass(frozen=True, slots=True)
class CodeMessage:
    verification_id: int
    kind: IdentifierKind
    recipient: str
    """The normalised phone or e-mail address."""
    code: str
    expires_at: datetime
    merchant_id: int
    member_id: int


class DeliveryChannel(Protocol):
    async def deliver(self, session: AsyncSession, keys: Keyring, message: CodeMessage) -> None:
        """Send (or enqueue) the message inside the verification's transaction."""


class OutboxChannel:
    async def deliver(self, session: AsyncSession, keys: Keyring, message: CodeMessage) -> None:
        sealed = keys.seal_message(
            orjson.dumps({"to": message.recipient, "code": message.code}),
            _context(message.verification_id),
        )
        await session.execute(
            text(
                "INSERT INTO outbox_event (topic, merchant_id, member_id, payload)"
                " VALUES (:topic, :merchant, :member, CAST(:payload AS jsonb))"
            ),
            {
                "topic": TOPIC,
                "merchant": message.merchant_id,
                "member": message.member_id,
                "payload": orjson.dumps(
                    {
                        "verification_id": message.verification_id,
                        "channel": "sms" if message.kind is IdentifierKind.PHONE else "email",
                        "to_masked": mask(message.kind, message.recipient),
                        "expires_at": message.expires_at.isoformat(),
                        "key_id": keys.current.key_id,
                        "sealed": base64.b64encode(sealed).decode(),
                    }
                ).decode(),
            },
        )


_channels: dict[IdentifierKind, DeliveryChannel] = {
    IdentifierKind.PHONE: OutboxChannel(),
    IdentifierKind.EMAIL: OutboxChannel(),
}


def channel(kind: IdentifierKind) -> DeliveryChannel:
    return _channels[kind]


def set_channel(kind: IdentifierKind, delivery: DeliveryChannel) -> DeliveryChannel:
    """Plug a provider in for one kind; returns the channel it replaces."""
    previous, _channels[kind] = _channels[kind], delivery
    return previous


async def delivered_code(db: Database, verification_id: int) -> tuple[str, str] | None:
    """(recipient, code) of the outbox message of a verification: for the demo and tests,
    standing in for the phone or mailbox that receives it."""
    async with db.autocommit() as conn:
        payload = await conn.scalar(
            text(
                "SELECT payload FROM outbox_event WHERE topic = :topic"
                " AND payload ->> 'verification_id' = :id ORDER BY id DESC LIMIT 1"
            ),
            {"topic": TOPIC, "id": str(verification_id)},
        )
    if payload is None:
        return None
    opened = orjson.loads(
        keyring(db.settings).open_message(
            payload["key_id"], base64.b64decode(payload["sealed"]), _context(verification_id)
        )
    )
    return str(opened["to"]), str(opened["code"])


def _context(verification_id: int) -> bytes:
    return f"identity.code:{verification_id}".encode()
