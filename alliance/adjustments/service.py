"""Manual adjustments with maker-checker (积分审核).

Merchant staff credit or debit a membership with a reason code and a note. Below the
program's approval threshold the adjustment posts at once; at or above it (and always,
while the merchant has set no threshold) it waits for a second staff identity of the
same merchant to approve or reject it, and expires if nobody does in time.

Staff identity: each OAuth client of a merchant is one staff identity (its subject,
`client:<id>`). A merchant gives each person who may adjust points a client of their
own (`alliance client create --role merchant --merchant CODE`), so "another person"
means "another client": the maker's own client can never approve or reject its request
(checked here, and by a CHECK constraint on the table).

Every step is one transaction with its audit record; a posting is one call of
`ledger_adjust` (migrations/sql/0010_audit.sql) inside it, against the program's
`adjustment` account, idempotent by the request (one request, one transaction).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.adjustments.models import (
    AdjustmentDirection,
    AdjustmentReason,
    AdjustmentRequest,
    AdjustmentStatus,
)
from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import (
    DomainError,
    IdempotencyKeyReused,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    InvalidTransition,
    NotFound,
    RetryLater,
    SelfApproval,
)
from alliance.ledger.service import request_fingerprint
from alliance.members.models import Membership
from alliance.programs.models import Program
from alliance.validation import MAX_POINTS, check_idempotency_key, check_points, clean_text

APPROVAL_WINDOW = timedelta(days=3)
"""How long a request waits for its checker before it expires."""
EXPIRY_BATCH = 500
ADJUSTMENTS_JOB = Actor(Role.OPERATOR, "system:adjustments", "alliance-jobs")
"""Who expires undecided requests (on the schedule and `alliance jobs run adjustments`)."""
_LEDGER_SCOPE = "adjustment-request"
log = logging.getLogger("alliance.adjustments")


@dataclass(frozen=True, slots=True)
class AdjustmentView:
    id: int
    merchant_id: int
    program_id: int
    membership_id: int
    direction: str
    points: int
    reason_code: str
    note: str
    status: str
    requested_by: str
    needs_approval: bool
    expires_at: datetime | None
    decided_by: str | None
    decision_note: str | None
    decided_at: datetime | None
    transaction_id: int | None
    created_at: datetime
    replayed: bool = False

    @classmethod
    def of(cls, r: AdjustmentRequest) -> AdjustmentView:
        return cls(
            r.id, r.merchant_id, r.program_id, r.membership_id, r.direction, r.points,
            r.reason_code, r.note, r.status, r.requested_by, r.needs_approval, r.expires_at,
            r.decided_by, r.decision_note, r.decided_at, r.transaction_id, r.created_at,
        )  # fmt: skip


def _require_staff(actor: Actor) -> int:
    actor.require(Role.MERCHANT)
    assert actor.merchant_id is not None, "merchant clients are bound to their merchant"
    return actor.merchant_id


def staff_identity(actor: Actor) -> str:
    """One OAuth client, one staff identity (see the module docstring)."""
    return actor.subject


async def set_adjustment_policy(
    db: Database, actor: Actor, *, program_id: int, approval_threshold: int | None
) -> int | None:
    """Adjustments of `approval_threshold` points or more need a second staff identity;
    None: all of them do."""
    merchant_id = _require_staff(actor)
    if approval_threshold is not None and not 1 <= approval_threshold <= MAX_POINTS:
        raise InvalidInput(
            f"approvalThreshold must be between 1 and {MAX_POINTS}",
            field=("approvalThreshold",),
        )
    async with db.transaction() as session:
        program = await session.get(Program, program_id, with_for_update=True)
        if program is None or program.merchant_id != merchant_id:
            raise NotFound("program not found", field=("programId",))
        before = program.adjustment_approval_threshold
        program.adjustment_approval_threshold = approval_threshold
        await record_audit(
            session, actor, action="program.adjustment_policy", target=f"program:{program_id}",
            before={"approval_threshold": before},
            after={"approval_threshold": approval_threshold},
        )  # fmt: skip
    return approval_threshold


async def request_adjustment(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    direction: AdjustmentDirection,
    points: int,
    reason_code: AdjustmentReason,
    note: str,
    idempotency_key: str,
) -> AdjustmentView:
    """Ask for an adjustment; it posts at once when below the program's threshold.

    Idempotent: the same key and request return the first result (`replayed`); a
    refused request (say, a debit of more than is spendable) leaves nothing behind.
    """
    _require_staff(actor)
    check_points(points)
    note = clean_text(note, "note", max_length=1000)
    check_idempotency_key(idempotency_key)
    direction, reason_code = AdjustmentDirection(direction), AdjustmentReason(reason_code)
    fingerprint = request_fingerprint(
        "adjustment", membership=membership_id, direction=direction.value, points=points,
        reason=reason_code.value, note=note,
    )  # fmt: skip
    async with db.transaction() as session:
        return await open_request(
            db, session, actor, membership_id=membership_id, direction=direction,
            points=points, reason_code=reason_code, note=note,
            idempotency_key=idempotency_key, fingerprint=fingerprint,
        )  # fmt: skip


async def open_request(
    db: Database,
    session: AsyncSession,
    actor: Actor,
    *,
    membership_id: int,
    direction: AdjustmentDirection,
    points: int,
    reason_code: AdjustmentReason,
    note: str,
    idempotency_key: str,
    fingerprint: bytes,
    appeal_id: int | None = None,
) -> AdjustmentView:
    """The request in the caller's transaction (inputs checked by the caller)."""
    merchant_id = _require_staff(actor)
    found = (
        await session.execute(
            select(
                Membership.member_id,
                Membership.program_id,
                Membership.status,
                Program.status.label("program_status"),
                Program.adjustment_approval_threshold,
            )
            .join(Program, Program.id == Membership.program_id)
            .where(Membership.id == membership_id, Program.merchant_id == merchant_id)
        )
    ).first()
    if found is None:
        raise NotFound("membership not found", field=("membershipId",))
    threshold = found.adjustment_approval_threshold
    needs_approval = threshold is None or points >= threshold
    claimed = await session.scalar(
        text(
            "INSERT INTO adjustment_request (merchant_id, program_id, membership_id,"
            " member_id, direction, points, reason_code, note, status, requested_by,"
            " idempotency_scope, idempotency_key, request_hash, needs_approval, expires_at)"
            " VALUES (:merchant, :program, :membership, :member, :direction, :points,"
            " :reason, :note, CASE WHEN :needs THEN 'pending' ELSE 'posted' END, :maker,"
            " :scope, :key, :hash, :needs,"
            " CASE WHEN :needs THEN now() + :window END)"
            " ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "merchant": merchant_id, "program": found.program_id,
            "membership": membership_id, "member": found.member_id,
            "direction": direction.value, "points": points, "reason": reason_code.value,
            "note": note, "maker": staff_identity(actor),
            "scope": actor.idempotency_scope, "key": idempotency_key,
            "hash": fingerprint, "needs": needs_approval, "window": APPROVAL_WINDOW,
        },
    )  # fmt: skip
    if claimed is None:
        first = await session.scalar(
            select(AdjustmentRequest).where(
                AdjustmentRequest.idempotency_scope == actor.idempotency_scope,
                AdjustmentRequest.idempotency_key == idempotency_key,
            )
        )
        if first is None:
            raise RetryLater("a concurrent request with this key failed; send it again")
        if first.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                f"idempotency key {idempotency_key} was already used for another request",
                field=("idempotencyKey",),
            )
        return replace(AdjustmentView.of(first), replayed=True)
    if found.status != "active" or found.program_status != "active":
        raise Inactive("program or membership is not active", field=("membershipId",))
    request = await session.get_one(AdjustmentRequest, claimed, with_for_update=True)
    after: dict[str, Any] = {
        "membership_id": membership_id, "direction": direction.value, "points": points,
        "reason_code": reason_code.value, "note": note, "needs_approval": needs_approval,
        "approval_threshold": threshold, "appeal_id": appeal_id,
    }  # fmt: skip
    if not needs_approval:
        posted = await _post(db, session, actor, request)
        after |= {"status": AdjustmentStatus.POSTED.value, **posted}
    else:
        after |= {"status": AdjustmentStatus.PENDING.value}
    await record_audit(
        session, actor, action="adjustment.request", target=f"adjustment_request:{claimed}",
        after=after, merchant_id=merchant_id,
    )  # fmt: skip
    await session.flush()
    await session.refresh(request)
    return AdjustmentView.of(request)


async def approve_adjustment(
    db: Database, actor: Actor, *, adjustment_id: int, note: str | None = None
) -> AdjustmentView:
    """The checker posts a pending request (never its own maker)."""
    if note is not None:
        note = clean_text(note, "note", max_length=1000, required=False) or None
    return await _decide(db, actor, adjustment_id, AdjustmentStatus.POSTED, note)


async def reject_adjustment(
    db: Database, actor: Actor, *, adjustment_id: int, reason: str
) -> AdjustmentView:
    """The checker refuses a pending request, saying why (never its own maker)."""
    reason = clean_text(reason, "reason", max_length=1000)
    return await _decide(db, actor, adjustment_id, AdjustmentStatus.REJECTED, reason)


async def _decide(
    db: Database,
    actor: Actor,
    adjustment_id: int,
    outcome: AdjustmentStatus,
    note: str | None,
) -> AdjustmentView:
    merchant_id = _require_staff(actor)
    checker = staff_identity(actor)
    async with db.transaction() as session:
        request = await session.get(AdjustmentRequest, adjustment_id, with_for_update=True)
        if request is None or request.merchant_id != merchant_id:
            raise NotFound("adjustment request not found", field=("adjustmentId",))
        if request.requested_by == checker:
            raise SelfApproval(
                "the staff identity that requested an adjustment cannot decide it",
                field=("adjustmentId",),
            )
        if request.status != AdjustmentStatus.PENDING:
            raise InvalidTransition(
                f"the request is {request.status}, not pending", field=("adjustmentId",)
            )
        now = await session.scalar(text("SELECT now()"))
        assert now is not None
        assert request.expires_at is not None
        if request.expires_at <= now:
            raise InvalidTransition("the request has expired", field=("adjustmentId",))
        after: dict[str, Any] = {"status": outcome.value, "note": note}
        request.status = outcome.value
        request.decided_by = checker
        request.decision_note = note
        request.decided_at = now
        if outcome is AdjustmentStatus.POSTED:
            after |= await _post(db, session, actor, request)
            await _resolve_appeal(session, request)
        await session.flush()
        await record_audit(
            session, actor,
            action="adjustment.approve" if outcome is AdjustmentStatus.POSTED
            else "adjustment.reject",
            target=f"adjustment_request:{adjustment_id}",
            before={"status": AdjustmentStatus.PENDING.value,
                    "requested_by": request.requested_by},
            after=after, merchant_id=merchant_id,
        )  # fmt: skip
        await session.refresh(request)
        return AdjustmentView.of(request)


async def _post(
    db: Database, session: AsyncSession, actor: Actor, request: AdjustmentRequest
) -> dict[str, Any]:
    """The request's ledger transaction, in the session's transaction; marks it posted."""
    signed = request.points if request.direction == AdjustmentDirection.CREDIT else -request.points
    details = {
        "adjustment_request_id": request.id,
        "reason_code": request.reason_code,
        "requested_by": request.requested_by,
        "approved_by": request.decided_by,
    }
    try:
        row = (
            await session.execute(
                text(
                    "SELECT transaction_id, balance_after FROM ledger_adjust(:scope, :key,"
                    " :hash, :client, :merchant, :membership, :points, :reason, :tz, :details)"
                ),
                {
                    "scope": _LEDGER_SCOPE,
                    "key": str(request.id),
                    "hash": hashlib.sha256(f"adjustment-request:{request.id}".encode()).digest(),
                    "client": actor.client_id,
                    "merchant": request.merchant_id,
                    "membership": request.membership_id,
                    "points": signed,
                    "reason": f"{request.reason_code}: {request.note}"[:500],
                    "tz": db.settings.time_zone,
                    "details": Jsonb(details),
                },
            )
        ).one()
    except DBAPIError as error:
        raise _ledger_error(error) from None
    request.status = AdjustmentStatus.POSTED.value
    request.transaction_id = row.transaction_id
    return {"transaction_id": row.transaction_id, "balance_after": row.balance_after}


async def _resolve_appeal(session: AsyncSession, request: AdjustmentRequest) -> None:
    """An appeal waiting for this adjustment is resolved by its posting (see appeals)."""
    await session.execute(
        text(
            "WITH done AS (UPDATE appeal SET status = 'resolved', closed_at = now(),"
            " updated_at = now(), resolution = :note WHERE adjustment_id = :id"
            " AND status IN ('open', 'in_review') RETURNING id, merchant_id, member_id)"
            " INSERT INTO outbox_event (topic, merchant_id, member_id, payload)"
            " SELECT 'appeal.updated', merchant_id, member_id,"
            " jsonb_build_object('appeal_id', id, 'status', 'resolved',"
            " 'adjustment_id', CAST(:id AS bigint)) FROM done"
        ),
        {"id": request.id, "note": request.note},
    )


def _ledger_error(error: DBAPIError) -> DomainError | DBAPIError:
    match getattr(error.orig, "sqlstate", None):
        case "LA402":
            return InsufficientPoints(
                "the member has fewer spendable points than the debit", field=("points",)
            )
        case "LA404":
            return NotFound("membership not found", field=("membershipId",))
        case "LA423":
            return Inactive("program or membership is not active", field=("membershipId",))
        case "40001" | "40P01":
            return RetryLater("the request conflicted with another; send it again")
    return error


async def expire_adjustments(db: Database, *, batch_size: int = EXPIRY_BATCH) -> int:
    """Expire pending requests past their deadline, a batch per transaction, each with
    its audit record; returns how many expired."""
    expired = 0
    while True:
        async with db.transaction() as session:
            # SKIP LOCKED: a request being decided right now is left to its checker.
            rows = (
                await session.execute(
                    text(
                        "UPDATE adjustment_request SET status = 'expired' WHERE id IN"
                        " (SELECT id FROM adjustment_request WHERE status = 'pending'"
                        " AND expires_at <= now() ORDER BY expires_at, id LIMIT :limit"
                        " FOR UPDATE SKIP LOCKED) RETURNING id, merchant_id, requested_by"
                    ),
                    {"limit": batch_size},
                )
            ).all()
            for row in rows:
                await record_audit(
                    session, ADJUSTMENTS_JOB, action="adjustment.expire",
                    target=f"adjustment_request:{row.id}",
                    before={"status": AdjustmentStatus.PENDING.value,
                            "requested_by": row.requested_by},
                    after={"status": AdjustmentStatus.EXPIRED.value},
                    merchant_id=row.merchant_id,
                )  # fmt: skip
        expired += len(rows)
        if len(rows) < batch_size:
            return expired


async def run_adjustment_expiry_schedule(db: Database, *, interval_seconds: float) -> None:
    """Expire undecided requests every `interval_seconds` until cancelled (inside
    `alliance serve`, on the points expiry interval). Several workers may run it: SKIP
    LOCKED keeps their batches apart and a request expires once."""
    await asyncio.sleep(random.uniform(0, interval_seconds))
    while True:
        try:
            expired = await expire_adjustments(db)
            if expired:
                log.info("%s adjustment requests expired", expired)
        except asyncio.CancelledError:
            raise
        except Exception:  # the schedule outlives a failed run; the next one retries
            log.exception("adjustment expiry failed")
        await asyncio.sleep(interval_seconds)
