"""Writing the audit trail, inside the transaction of the act it records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.models import AuditRecord
from alliance.auth.actor import Actor
from alliance.logs import request_id_var


async def record_audit(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    merchant_id: int | None = None,
) -> None:
    """One record, in the caller's transaction; the database chains and timestamps it.

    `merchant_id` is the merchant the act concerns, whose staff may read the record
    (default: the actor's own merchant binding, if any).
    """
    await session.execute(
        insert(AuditRecord).values(
            actor=actor.subject,
            client_id=actor.client_id,
            role=actor.role.value,
            action=action,
            target=target,
            before=before,
            after=after,
            request_id=request_id_var.get(),
            merchant_id=actor.merchant_id if merchant_id is None else merchant_id,
        )
    )
