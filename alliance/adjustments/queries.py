"""Reading adjustment requests: a merchant's staff see their merchant's; operators and
auditors see all; nobody else any."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from alliance.adjustments.models import AdjustmentRequest, AdjustmentStatus
from alliance.adjustments.service import AdjustmentView
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden


def _scoped(actor: Actor) -> int | None:
    """None: every merchant's. Raises for roles that see none."""
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return None
    if actor.role is Role.MERCHANT and actor.merchant_id is not None:
        return actor.merchant_id
    raise Forbidden("adjustments are for merchant staff, operators and auditors")


async def adjustments_page(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    status: AdjustmentStatus | None = None,
    membership_id: int | None = None,
) -> tuple[list[AdjustmentView], bool]:
    """Newest first."""
    merchant_id = _scoped(actor)
    stmt = select(AdjustmentRequest).order_by(AdjustmentRequest.id.desc()).limit(first + 1)
    if merchant_id is not None:
        stmt = stmt.where(AdjustmentRequest.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(AdjustmentRequest.id < after)
    if status is not None:
        stmt = stmt.where(AdjustmentRequest.status == AdjustmentStatus(status).value)
    if membership_id is not None:
        stmt = stmt.where(AdjustmentRequest.membership_id == membership_id)
    async with db.transaction() as session:
        rows = list(await session.scalars(stmt))
    return [AdjustmentView.of(r) for r in rows[:first]], len(rows) > first


async def adjustments_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, AdjustmentView]:
    try:
        merchant_id = _scoped(actor)
    except Forbidden:
        return {}
    stmt = select(AdjustmentRequest).where(AdjustmentRequest.id.in_(list(ids)))
    if merchant_id is not None:
        stmt = stmt.where(AdjustmentRequest.merchant_id == merchant_id)
    async with db.transaction() as session:
        return {r.id: AdjustmentView.of(r) for r in await session.scalars(stmt)}
