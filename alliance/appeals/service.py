"""Appeals (积分申诉): open → in_review → resolved or rejected.

A member opens an appeal on one entry of their own history (`openAppeal`, with a
reason and their text), through the app of the entry's merchant. Member and merchant
staff write to its thread; the first staff reply (or a proposed adjustment) puts it in
review. Staff resolve it with an adjustment, which goes through maker-checker like any
other (the appeal is resolved when the adjustment posts: at once below the program's
threshold, else when another staff identity approves it), or reject it with a reason.

SLA: staff should answer within RESPONSE_SLA and close within RESOLUTION_SLA of the
opening; both deadlines are stored on the appeal, and the statistics count the
appeals that missed them. Every step writes an `appeal.updated` outbox event; the
steps of staff are audited (the member's own acts are theirs, in the thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.adjustments.models import AdjustmentDirection, AdjustmentReason, AdjustmentRequest
from alliance.adjustments.service import AdjustmentView, open_request
from alliance.appeals.models import Appeal, AppealReason, AppealStatus
from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import AlreadyExists, InvalidTransition, NotFound
from alliance.ledger.service import request_fingerprint
from alliance.validation import check_idempotency_key, check_points, clean_text

RESPONSE_SLA = timedelta(days=2)
RESOLUTION_SLA = timedelta(days=14)
_LIVE = (AppealStatus.OPEN.value, AppealStatus.IN_REVIEW.value)


@dataclass(frozen=True, slots=True)
class AppealView:
    id: int
    merchant_id: int
    program_id: int
    membership_id: int
    member_id: int
    transaction_id: int
    entry_id: int
    reason: str
    body: str
    status: str
    respond_by: datetime
    resolve_by: datetime
    first_response_at: datetime | None
    closed_at: datetime | None
    resolution: str | None
    adjustment_id: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, a: Appeal) -> AppealView:
        return cls(
            a.id, a.merchant_id, a.program_id, a.membership_id, a.member_id, a.transaction_id,
            a.entry_id, a.reason, a.body, a.status, a.respond_by, a.resolve_by,
            a.first_response_at, a.closed_at, a.resolution, a.adjustment_id, a.created_at,
            a.updated_at,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Resolution:
    appeal: AppealView
    adjustment: AdjustmentView


async def open_appeal(
    db: Database, actor: Actor, *, entry_id: int, reason: AppealReason, body: str
) -> AppealView:
    """The member disputes one entry of their history at the app's merchant."""
    actor.require(Role.MEMBER)
    reason = AppealReason(reason)
    body = clean_text(body, "text", max_length=4000)
    async with db.transaction() as session:
        entry = (
            await session.execute(
                text(
                    "SELECT p.transaction_id, a.membership_id, a.program_id, g.merchant_id,"
                    " a.member_id FROM posting p JOIN account a ON a.id = p.account_id"
                    " AND a.kind = 'member' JOIN program g ON g.id = a.program_id"
                    " WHERE p.id = :entry AND a.member_id = :member AND g.merchant_id = :merchant"
                ),
                {"entry": entry_id, "member": actor.member_id, "merchant": actor.merchant_id},
            )
        ).first()
        if entry is None:
            raise NotFound("entry not found", field=("entryId",))
        appeal_id = await session.scalar(
            text(
                "INSERT INTO appeal (merchant_id, program_id, membership_id, member_id,"
                " transaction_id, entry_id, reason, body, respond_by, resolve_by)"
                " VALUES (:merchant, :program, :membership, :member, :tx, :entry, :reason,"
                " :body, now() + :respond, now() + :resolve)"
                " ON CONFLICT (transaction_id) WHERE status IN ('open', 'in_review')"
                " DO NOTHING RETURNING id"
            ),
            {
                "merchant": entry.merchant_id, "program": entry.program_id,
                "membership": entry.membership_id, "member": entry.member_id,
                "tx": entry.transaction_id, "entry": entry_id, "reason": reason.value,
                "body": body, "respond": RESPONSE_SLA, "resolve": RESOLUTION_SLA,
            },
        )  # fmt: skip
        if appeal_id is None:
            raise AlreadyExists("this transaction already has an open appeal", field=("entryId",))
        await _message(session, appeal_id, actor, body)
        appeal = await session.get_one(Appeal, appeal_id)
        await record_audit(
            session, actor, action="appeal.open", target=f"appeal:{appeal_id}",
            after={"entry_id": entry_id, "transaction_id": entry.transaction_id,
                   "reason": reason.value, "status": AppealStatus.OPEN.value},
            merchant_id=entry.merchant_id,
        )  # fmt: skip
        await _event(session, appeal, "opened")
        return AppealView.of(appeal)


async def post_appeal_message(
    db: Database, actor: Actor, *, appeal_id: int, body: str
) -> AppealView:
    """A message to the thread, by the member or the merchant's staff. The first staff
    message puts an open appeal in review."""
    actor.require(Role.MEMBER, Role.MERCHANT)
    body = clean_text(body, "text", max_length=4000)
    async with db.transaction() as session:
        appeal = await _locked(session, actor, appeal_id)
        if appeal.status not in _LIVE:
            raise InvalidTransition(f"the appeal is {appeal.status}", field=("appealId",))
        await _message(session, appeal_id, actor, body)
        now = await _now(session)
        if actor.role is Role.MERCHANT:
            before = appeal.status
            _respond(appeal, now)
            await record_audit(
                session, actor, action="appeal.reply", target=f"appeal:{appeal_id}",
                before={"status": before}, after={"status": appeal.status},
                merchant_id=appeal.merchant_id,
            )  # fmt: skip
        appeal.updated_at = now
        await session.flush()
        await _event(session, appeal, "message")
        return AppealView.of(appeal)


async def resolve_appeal(
    db: Database,
    actor: Actor,
    *,
    appeal_id: int,
    direction: AdjustmentDirection,
    points: int,
    note: str,
    idempotency_key: str,
) -> Resolution:
    """Propose the adjustment that settles the appeal. It goes through maker-checker:
    below the program's threshold it posts and the appeal is resolved now; otherwise the
    appeal stays in review until another staff identity approves it (or, rejected or
    expired, staff propose another or reject the appeal). Idempotent by the key."""
    actor.require(Role.MERCHANT)
    check_points(points)
    note = clean_text(note, "note", max_length=1000)
    check_idempotency_key(idempotency_key)
    direction = AdjustmentDirection(direction)
    async with db.transaction() as session:
        appeal = await _locked(session, actor, appeal_id)
        fingerprint = request_fingerprint(
            "adjustment", membership=appeal.membership_id, direction=direction.value,
            points=points, reason=AdjustmentReason.APPEAL.value, note=note, appeal=appeal_id,
        )  # fmt: skip
        current = await _adjustment_of(session, appeal)
        replay = current is not None and (
            current.idempotency_scope == actor.idempotency_scope
            and current.idempotency_key == idempotency_key
        )
        if not replay:
            if appeal.status not in _LIVE:
                raise InvalidTransition(f"the appeal is {appeal.status}", field=("appealId",))
            if current is not None and current.status == "pending":
                raise InvalidTransition(
                    f"adjustment {current.id} for this appeal is waiting for approval",
                    field=("appealId",),
                )
        adjustment = await open_request(
            db, session, actor, membership_id=appeal.membership_id, direction=direction,
            points=points, reason_code=AdjustmentReason.APPEAL, note=note,
            idempotency_key=idempotency_key, fingerprint=fingerprint, appeal_id=appeal_id,
        )  # fmt: skip
        if adjustment.replayed:
            return Resolution(AppealView.of(appeal), adjustment)
        before = appeal.status
        now = await _now(session)
        appeal.adjustment_id = adjustment.id
        _respond(appeal, now)
        if adjustment.status == "posted":
            appeal.status = AppealStatus.RESOLVED.value
            appeal.closed_at = now
            appeal.resolution = note
        appeal.updated_at = now
        await session.flush()
        await record_audit(
            session, actor, action="appeal.resolve", target=f"appeal:{appeal_id}",
            before={"status": before},
            after={"status": appeal.status, "adjustment_id": adjustment.id,
                   "adjustment_status": adjustment.status},
            merchant_id=appeal.merchant_id,
        )  # fmt: skip
        await _event(session, appeal, "resolution_proposed")
        return Resolution(AppealView.of(appeal), adjustment)


async def reject_appeal(db: Database, actor: Actor, *, appeal_id: int, reason: str) -> AppealView:
    """Refuse the appeal, saying why (merchant staff)."""
    actor.require(Role.MERCHANT)
    reason = clean_text(reason, "reason", max_length=2000)
    async with db.transaction() as session:
        appeal = await _locked(session, actor, appeal_id)
        if appeal.status not in _LIVE:
            raise InvalidTransition(f"the appeal is {appeal.status}", field=("appealId",))
        current = await _adjustment_of(session, appeal)
        if current is not None and current.status == "pending":
            raise InvalidTransition(
                f"adjustment {current.id} for this appeal is waiting for approval: reject it first",
                field=("appealId",),
            )
        before = appeal.status
        now = await _now(session)
        _respond(appeal, now)
        appeal.status = AppealStatus.REJECTED.value
        appeal.closed_at = now
        appeal.resolution = reason
        appeal.updated_at = now
        await session.flush()
        await record_audit(
            session, actor, action="appeal.reject", target=f"appeal:{appeal_id}",
            before={"status": before}, after={"status": appeal.status, "reason": reason},
            merchant_id=appeal.merchant_id,
        )  # fmt: skip
        await _event(session, appeal, "rejected")
        return AppealView.of(appeal)


async def _locked(session: AsyncSession, actor: Actor, appeal_id: int) -> Appeal:
    appeal = await session.get(Appeal, appeal_id, with_for_update=True)
    if appeal is None or not _visible(actor, appeal.merchant_id, appeal.member_id):
        raise NotFound("appeal not found", field=("appealId",))
    return appeal


def _visible(actor: Actor, merchant_id: int, member_id: int) -> bool:
    if actor.role is Role.MEMBER:
        return member_id == actor.member_id and merchant_id == actor.merchant_id
    if actor.role is Role.MERCHANT:
        return merchant_id == actor.merchant_id
    return actor.role in (Role.OPERATOR, Role.AUDITOR)


async def _adjustment_of(session: AsyncSession, appeal: Appeal) -> AdjustmentRequest | None:
    if appeal.adjustment_id is None:
        return None
    return await session.scalar(
        select(AdjustmentRequest).where(AdjustmentRequest.id == appeal.adjustment_id)
    )


def _respond(appeal: Appeal, now: datetime) -> None:
    """Staff acted: the first response, and an open appeal goes into review."""
    if appeal.first_response_at is None:
        appeal.first_response_at = now
    if appeal.status == AppealStatus.OPEN:
        appeal.status = AppealStatus.IN_REVIEW.value


async def _now(session: AsyncSession) -> datetime:
    now = await session.scalar(text("SELECT now()"))
    assert now is not None
    return now


async def _message(session: AsyncSession, appeal_id: int, actor: Actor, body: str) -> None:
    await session.execute(
        text(
            "INSERT INTO appeal_message (appeal_id, author_role, author, body)"
            " VALUES (:appeal, :role, :author, :body)"
        ),
        {"appeal": appeal_id, "role": actor.role.value, "author": actor.subject, "body": body},
    )


async def _event(session: AsyncSession, appeal: Appeal, change: str) -> None:
    payload: dict[str, Any] = {
        "appeal_id": appeal.id, "change": change, "status": appeal.status,
        "membership_id": appeal.membership_id, "transaction_id": appeal.transaction_id,
        "adjustment_id": appeal.adjustment_id,
    }  # fmt: skip
    await session.execute(
        text(
            "INSERT INTO outbox_event (topic, merchant_id, member_id, payload)"
            " VALUES ('appeal.updated', :merchant, :member, CAST(:payload AS jsonb))"
        ),
        {
            "merchant": appeal.merchant_id,
            "member": appeal.member_id,
            "payload": orjson.dumps(payload).decode(),
        },
    )
