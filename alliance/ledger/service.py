"""Moving points: awards and spends, each idempotent by the client's key.

Each use case is one call of a PL/pgSQL function (migrations/sql/0001_ledger.sql)
on an autocommit connection: one round trip, one transaction. Authorization
and input checks happen here; the function enforces the merchant or member
scope it is given, so a foreign membership is indistinguishable from a missing one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import (
    AlreadyRewarded,
    DomainError,
    IdempotencyKeyReused,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    NotFound,
    RetryLater,
)
from alliance.validation import check_idempotency_key, check_points, clean_text


@dataclass(frozen=True, slots=True)
class Movement:
    """The result of a points movement; a replay returns the first one unchanged."""

    transaction_id: int
    entry_id: int
    """The posting on the member account: the member's history entry."""
    membership_id: int
    program_id: int
    kind: str
    reason: str
    points: int
    """Signed change of the member's balance."""
    balance_after: int
    created_at: datetime
    replayed: bool


_SQL = {
    "award": "SELECT * FROM ledger_award(%(scope)s, %(key)s, %(hash)s, %(client)s,"
    " %(merchant)s::bigint, %(member)s::bigint, %(membership)s::bigint, %(points)s::bigint,"
    " %(reason)s, %(tz)s, %(kind)s, %(details)s)",
    "earn": "SELECT * FROM ledger_earn(%(scope)s, %(key)s, %(hash)s, %(client)s,"
    " %(merchant)s::bigint, %(member)s::bigint, %(membership)s::bigint, %(reason)s, %(tz)s,"
    " %(at)s, %(breakdown)s, %(details)s, %(action)s, %(period)s, %(spend)s::numeric,"
    " %(program)s::bigint)",
    "referral": "SELECT * FROM ledger_referral(%(scope)s, %(key)s, %(hash)s, %(client)s,"
    " %(merchant)s::bigint, %(referee)s::bigint, %(referrer)s::bigint, %(reason)s, %(tz)s,"
    " %(at)s, %(referee_breakdown)s, %(referrer_breakdown)s, %(details)s)",
    "spend": "SELECT * FROM ledger_spend(%(scope)s, %(key)s, %(hash)s, %(client)s,"
    " %(merchant)s::bigint, %(member)s::bigint, %(membership)s::bigint, %(points)s::bigint,"
    " %(reason)s, %(tz)s)",
}
_CREDITS = {"award", "earn"}


def request_fingerprint(operation: str, **arguments: object) -> bytes:
    """SHA-256 of the canonical request: same key + other fingerprint = key reuse."""
    canonical = orjson.dumps({"op": operation, **arguments}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).digest()


def _domain_error(error: psycopg.Error) -> DomainError | None:
    match error.sqlstate:
        case "LA404":
            return NotFound("membership not found", field=("membershipId",))
        case "LA402":
            return InsufficientPoints("not enough spendable points", field=("points",))
        case "LA409":
            return IdempotencyKeyReused(_message(error), field=("idempotencyKey",))
        case "LA423":
            return Inactive(_message(error), field=("membershipId",))
        case "LA410":
            return AlreadyRewarded(_message(error), field=("action",))
        case "LA422":
            return InvalidInput(_message(error))
        case "LA414":
            return NotFound(_message(error), field=("orderId",))
        case "40001" | "40P01":
            return RetryLater("the request conflicted with another; send it again")
    return None


async def award_points(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
) -> Movement:
    """Credit a membership with points (a merchant's goodwill or manual award)."""
    actor.require(Role.MERCHANT)
    return await _move(db, actor, "award", membership_id, points, reason, idempotency_key)


async def spend_points(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
) -> Movement:
    """Debit spendable points: at the merchant's counter, or by the member themself."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    return await _move(db, actor, "spend", membership_id, points, reason, idempotency_key)


async def _move(
    db: Database,
    actor: Actor,
    kind: str,
    membership_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
) -> Movement:
    check_points(points)
    reason = clean_text(reason, "reason", max_length=500)
    check_idempotency_key(idempotency_key)
    return await run_movement(
        db, actor, kind, membership_id, points, reason,
        scope=actor.idempotency_scope, key=idempotency_key,
        fingerprint=request_fingerprint(kind, membership=membership_id, points=points,
                                        reason=reason),
    )  # fmt: skip


async def run_movement(
    db: Database,
    actor: Actor,
    kind: str,
    membership_id: int,
    points: int,
    reason: str,
    *,
    scope: str,
    key: str,
    fingerprint: bytes,
    details: dict[str, Any] | None = None,
) -> Movement:
    """One ledger movement (`award`, `earn` or `spend`), checked input, one transaction."""
    parameters = {
        "scope": scope,
        "key": key,
        "hash": fingerprint,
        "client": actor.client_id,
        # The function sees only this merchant's programs; a member token only
        # its own memberships there (spending elsewhere is cross-brand redemption).
        "merchant": actor.merchant_id,
        "member": actor.member_id if actor.role is Role.MEMBER else None,
        "membership": membership_id,
        "points": points,
        "reason": reason,
        "tz": db.settings.time_zone,
        "kind": kind,
        "details": None if details is None else Jsonb(details, dumps=_dumps),
    }
    try:
        row = await db.fetch_one(_SQL["award" if kind in _CREDITS else "spend"], parameters)
    except psycopg.Error as error:
        mapped = _domain_error(error)
        if mapped is None:
            raise
        raise mapped from None
    assert row is not None, "a movement function always returns its row"
    transaction_id, entry_id, program_id, balance_after, created_at, replayed = row
    signed = points if kind in _CREDITS else -points
    return Movement(
        transaction_id, entry_id, membership_id, program_id, kind, reason, signed,
        balance_after, created_at, replayed,
    )  # fmt: skip


class ProgramMismatch(Exception):
    """The membership is not in the program the earn was evaluated for (see run_earn)."""


@dataclass(frozen=True, slots=True)
class Earn:
    """An earn by rules: what was posted (None when caps left nothing) and why."""

    movement: Movement | None
    breakdown: dict[str, Any]
    """The final breakdown as stored: {"points", "lines"}, cap cuts included."""
    as_sent: bool = False
    """The breakdown is the one sent: no cap cut it (and this is no replay)."""


def _earn(row: Any, membership_id: int, reason: str, sent: dict[str, Any]) -> Earn:
    transaction_id, entry_id, program_id, balance_after, created_at, replayed, final = row[-7:]
    as_sent = final is None  # ledger_earn answers a breakdown only when caps changed it
    if as_sent:
        final = sent
    movement = None
    if transaction_id is not None:
        movement = Movement(
            transaction_id, entry_id, membership_id, program_id, "earn", reason,
            int(final["points"]), balance_after, created_at, replayed,
        )  # fmt: skip
    return Earn(movement, final, as_sent)


def raise_domain_error(error: psycopg.Error) -> None:
    """Raise the domain error a ledger function's SQLSTATE stands for, if any."""
    mapped = _domain_error(error)
    if mapped is not None:
        raise mapped from None


async def run_earn(
    db: Database,
    actor: Actor,
    membership_id: int,
    reason: str,
    *,
    scope: str,
    key: str,
    fingerprint: bytes,
    at: datetime,
    breakdown: dict[str, Any],
    details: dict[str, Any],
    action: str | None = None,
    period_key: str | None = None,
    spend: Decimal | None = None,
    program_id: int | None = None,
) -> Earn:
    """Post an earn by rules (ledger_earn): caps applied under the account's lock, an
    action's once-per-period claim taken in the same transaction. With `program_id` the
    membership must be in that program (the rules were evaluated for it), else
    ProgramMismatch and nothing is written."""
    parameters = {
        "scope": scope, "key": key, "hash": fingerprint, "client": actor.client_id,
        "merchant": actor.merchant_id, "member": None, "membership": membership_id,
        "reason": reason, "tz": db.settings.time_zone, "at": at,
        "breakdown": Jsonb(breakdown, dumps=_dumps), "details": Jsonb(details, dumps=_dumps),
        "action": action, "period": period_key, "spend": spend, "program": program_id,
    }  # fmt: skip
    try:
        row = await db.fetch_one(_SQL["earn"], parameters)
    except psycopg.Error as error:
        if error.sqlstate == "LA405":
            raise ProgramMismatch from None
        raise_domain_error(error)
        raise
    assert row is not None, "ledger_earn always returns its row"
    return _earn(row, membership_id, reason, breakdown)


async def run_referral(
    db: Database,
    actor: Actor,
    *,
    referee_membership_id: int,
    referrer_membership_id: int,
    reason: str,
    scope: str,
    key: str,
    fingerprint: bytes,
    at: datetime,
    referee_breakdown: dict[str, Any],
    referrer_breakdown: dict[str, Any],
    details: dict[str, Any],
) -> tuple[Earn, Earn]:
    """Both sides of a referral and the referral itself, in one transaction."""
    parameters = {
        "scope": scope, "key": key, "hash": fingerprint, "client": actor.client_id,
        "merchant": actor.merchant_id, "referee": referee_membership_id,
        "referrer": referrer_membership_id, "reason": reason, "tz": db.settings.time_zone,
        "at": at, "referee_breakdown": Jsonb(referee_breakdown, dumps=_dumps),
        "referrer_breakdown": Jsonb(referrer_breakdown, dumps=_dumps),
        "details": Jsonb(details, dumps=_dumps),
    }  # fmt: skip
    try:
        rows = await db.fetch_all(_SQL["referral"], parameters)
    except psycopg.Error as error:
        raise_domain_error(error)
        raise
    sides = {row[0]: row for row in rows}
    return (
        _earn(sides["referee"], referee_membership_id, reason, referee_breakdown),
        _earn(sides["referrer"], referrer_membership_id, reason, referrer_breakdown),
    )


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)  # psycopg sends bytes as they are


def _message(error: psycopg.Error) -> str:
    return error.diag.message_primary or str(error)
