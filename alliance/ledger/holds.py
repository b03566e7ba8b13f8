"""Two-phase holds: reserve points now, spend them (all or part) or release them later.

A counter discount authorizes while the bill is open and captures when it is paid; a
reward reservation holds until fulfilment. Each step is one ledger function call
(migrations/sql/0006_holds.sql). An authorization not captured in time expires: the job
in `release_expired_holds` frees its points, and a capture after the deadline is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

import psycopg

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import IdempotencyKeyReused, Inactive, InvalidInput, NotFound
from alliance.ledger.service import raise_domain_error, request_fingerprint
from alliance.members.queries import memberships_by_id
from alliance.programs.models import Program
from alliance.programs.queries import ProgramRecord, programs_by_id
from alliance.validation import (
    check_decimal,
    check_idempotency_key,
    check_points,
    check_range,
    clean_text,
)

CENT = Decimal("0.01")
DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 7 * 24 * 3600
RELEASE_BATCH = 500


@dataclass(frozen=True, slots=True)
class HoldRecord:
    id: int
    account_id: int
    membership_id: int
    program_id: int
    member_id: int
    kind: str
    points: int
    captured: int | None
    status: str
    expires_at: datetime
    idempotency_scope: str
    idempotency_key: str
    request_hash: bytes
    transaction_id: int | None
    reason: str
    created_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Capture:
    hold_id: int
    transaction_id: int
    entry_id: int
    """The member's history entry of the spend."""
    balance_after: int
    replayed: bool


def _scope(actor: Actor) -> tuple[int | None, int | None]:
    """The merchant and member a hold operation is confined to."""
    return actor.merchant_id, actor.member_id if actor.role is Role.MEMBER else None


def _raise(error: psycopg.Error) -> None:
    match error.sqlstate:
        case "LA404":
            raise NotFound(str(error.diag.message_primary), field=("holdId",)) from None
        case "LA423":
            raise Inactive(str(error.diag.message_primary), field=("holdId",)) from None
        case "LA422":
            raise InvalidInput(str(error.diag.message_primary), field=("points",)) from None
        case "LA409":
            raise IdempotencyKeyReused(str(error.diag.message_primary)) from None
    raise_domain_error(error)


async def authorize_hold(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    points: int,
    kind: str,
    reason: str,
    idempotency_key: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> HoldRecord:
    """Reserve spendable points; they stay the member's but nothing else can spend them."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    check_points(points)
    check_idempotency_key(idempotency_key)
    check_range(ttl_seconds, "ttlSeconds", minimum=10, maximum=MAX_TTL_SECONDS)
    reason = clean_text(reason, "reason", max_length=500)
    merchant, member = _scope(actor)
    fingerprint = request_fingerprint("hold", membership=membership_id, points=points,
                                      kind=kind, reason=reason)  # fmt: skip
    try:
        row = await db.fetch_one(
            "SELECT * FROM ledger_hold_authorize(%(scope)s, %(key)s, %(hash)s,"
            " %(merchant)s::bigint, %(member)s::bigint, %(membership)s::bigint,"
            " %(points)s::bigint, %(kind)s, %(ttl)s, %(reason)s)",
            {"scope": actor.idempotency_scope, "key": idempotency_key, "hash": fingerprint,
             "merchant": merchant, "member": member, "membership": membership_id,
             "points": points, "kind": kind, "ttl": ttl_seconds, "reason": reason},
        )  # fmt: skip
    except psycopg.Error as error:
        if error.sqlstate == "LA404":
            raise NotFound("membership not found", field=("membershipId",)) from None
        _raise(error)
        raise
    assert row is not None
    return HoldRecord(*row)


@dataclass(frozen=True, slots=True)
class Discount:
    hold: HoldRecord
    money_off: Decimal
    """What the points are worth on the bill, at the program's point value, to the cent
    (rounded down: never more than the points are worth)."""


async def authorize_discount(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    points: int,
    bill_amount: Decimal,
    reason: str,
    idempotency_key: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> Discount:
    """Points off a bill at the counter, by the program's discount policy: at least its
    minimum points, worth at most its maximum share of the bill."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    check_decimal(bill_amount, "billAmount", minimum_exclusive=Decimal(0),
                  maximum=Decimal(10**9), places=2)  # fmt: skip
    program = await _program_of(db, actor, membership_id)
    worth = (program.point_value * points).quantize(CENT, rounding=ROUND_FLOOR)
    if points < program.discount_min_points:
        raise InvalidInput(f"a discount uses at least {program.discount_min_points} points",
                           field=("points",))  # fmt: skip
    limit = (bill_amount * program.discount_max_share).quantize(CENT, rounding=ROUND_FLOOR)
    if worth > limit:
        raise InvalidInput(f"{points} points are worth {worth}; points may pay at most "
                           f"{limit} of this bill", field=("points",))  # fmt: skip
    hold = await authorize_hold(
        db, actor, membership_id=membership_id, points=points, kind="discount",
        reason=reason, idempotency_key=idempotency_key, ttl_seconds=ttl_seconds,
    )  # fmt: skip
    return Discount(hold, worth)


async def _program_of(db: Database, actor: Actor, membership_id: int) -> ProgramRecord:
    visible = await memberships_by_id(db, actor, [membership_id])
    membership = visible.get(membership_id)
    if membership is None:
        raise NotFound("membership not found", field=("membershipId",))
    programs = await programs_by_id(db, actor, [membership.program_id])
    return programs[membership.program_id]


async def set_discount_policy(
    db: Database, actor: Actor, *, program_id: int, max_share: Decimal, min_points: int
) -> None:
    """The largest share of a bill points may pay, and the fewest points a discount uses."""
    actor.require(Role.MERCHANT)
    check_decimal(max_share, "maxShare", minimum_exclusive=Decimal(0), maximum=Decimal(1),
                  places=3)  # fmt: skip
    check_range(min_points, "minPoints", minimum=1, maximum=1_000_000)
    async with db.transaction() as session:
        program = await session.get(Program, program_id, with_for_update=True)
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        before = {"max_share": str(program.discount_max_share),
                  "min_points": program.discount_min_points}  # fmt: skip
        program.discount_max_share = max_share
        program.discount_min_points = min_points
        await record_audit(
            session, actor, action="program.discount_policy", target=f"program:{program_id}",
            before=before, after={"max_share": str(max_share), "min_points": min_points},
        )  # fmt: skip


async def capture_hold(
    db: Database, actor: Actor, *, hold_id: int, points: int | None = None
) -> Capture:
    """Spend `points` of the hold (default: all of it); the rest is released."""
    actor.require(Role.MERCHANT)
    if points is not None:
        check_points(points)
    merchant, member = _scope(actor)
    try:
        row = await db.fetch_one(
            "SELECT * FROM ledger_hold_capture(%(hold)s::bigint, %(merchant)s::bigint,"
            " %(member)s::bigint, %(points)s::bigint, %(client)s)",
            {"hold": hold_id, "merchant": merchant, "member": member, "points": points,
             "client": actor.client_id},
        )  # fmt: skip
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    return Capture(*row)


@dataclass(frozen=True, slots=True)
class Refund:
    transaction_id: int
    entry_id: int
    balance_after: int
    replayed: bool


async def refund_hold(
    db: Database, actor: Actor, *, hold_id: int, points: int, refund_id: str
) -> Refund:
    """Give back points of a captured discount (its bill was refunded); idempotent per
    refund id, and never more than the capture spent in all."""
    actor.require(Role.MERCHANT)
    check_points(points)
    refund_id = clean_text(refund_id, "refundId", max_length=64)
    try:
        row = await db.fetch_one(
            "SELECT * FROM ledger_hold_refund(%(hold)s::bigint, %(merchant)s::bigint,"
            " %(refund)s, %(hash)s, %(points)s::bigint, %(client)s, %(tz)s)",
            {"hold": hold_id, "merchant": actor.merchant_id, "refund": refund_id,
             "hash": request_fingerprint("hold-refund", hold=hold_id, points=points),
             "points": points, "client": actor.client_id, "tz": db.settings.time_zone},
        )  # fmt: skip
    except psycopg.Error as error:
        if error.sqlstate == "LA409":
            raise IdempotencyKeyReused(str(error.diag.message_primary),
                                       field=("refundId",)) from None  # fmt: skip
        _raise(error)
        raise
    assert row is not None
    return Refund(*row)


async def void_hold(db: Database, actor: Actor, *, hold_id: int) -> HoldRecord:
    """Release the hold's points (the member cancelled, the bill was paid otherwise)."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    merchant, member = _scope(actor)
    try:
        row = await db.fetch_one(
            "SELECT * FROM ledger_hold_void(%(hold)s::bigint, %(merchant)s::bigint,"
            " %(member)s::bigint)",
            {"hold": hold_id, "merchant": merchant, "member": member},
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    return HoldRecord(*row)


_HOLDS_BY_ID = """
    SELECT h.* FROM hold h JOIN program p ON p.id = h.program_id
     WHERE h.id = ANY(%(ids)s)
       AND (%(merchant)s::bigint IS NULL OR p.merchant_id = %(merchant)s::bigint)
       AND (%(member)s::bigint IS NULL OR h.member_id = %(member)s::bigint)"""


async def holds_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, HoldRecord]:
    """Holds the actor may see: the alliance-wide roles all, a merchant (or its finance)
    its programs', a member its own."""
    merchant = None if actor.is_alliance_wide else actor.merchant_id
    member = actor.member_id if actor.role is Role.MEMBER else None
    rows = await db.fetch_all(
        _HOLDS_BY_ID, {"ids": list(ids), "merchant": merchant, "member": member}
    )
    return {row[0]: HoldRecord(*row) for row in rows}


async def release_expired_holds(
    db: Database, *, now: datetime | None = None, batch_size: int = RELEASE_BATCH
) -> int:
    """Free the points of every authorization past its deadline; returns how many."""
    released = 0
    while True:
        row = await db.fetch_one(
            "SELECT ledger_hold_release_expired(coalesce(%(now)s, now()), %(limit)s)",
            {"now": now, "limit": batch_size},
        )
        count = int(row[0]) if row else 0
        released += count
        if count == 0:
            return released
