"""Point gifting (积分社交化): a member gives points to another member of the same
program, where the program allows it.

The program's gift policy says whether gifts are on, the most points one gift may carry
and the most a sender may give per day (alliance time zone); the day's total is counted
under the sender's account lock, so concurrent gifts cannot pass it. A gift is one
ledger transaction (points_gift in migrations/sql/0009_rewards.sql): -points on the
sender (lots consumed soonest-expiring first), +points on the recipient as a new lot
that expires no later than the soonest lot it came from. Idempotent by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from sqlalchemy.dialects.postgresql import insert

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import (
    DomainError,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    LimitReached,
    NotAvailable,
    NotFound,
)
from alliance.ledger.service import raise_domain_error, request_fingerprint
from alliance.programs.models import Program
from alliance.rewards.models import GiftPolicy
from alliance.validation import check_idempotency_key, check_points, clean_text


@dataclass(frozen=True, slots=True)
class GiftPolicyRecord:
    program_id: int
    enabled: bool
    max_points_per_gift: int
    daily_limit_points: int


@dataclass(frozen=True, slots=True)
class GiftResult:
    transaction_id: int
    entry_id: int
    """The sender's history entry."""
    balance_after: int
    recipient_entry_id: int
    created_at: datetime
    replayed: bool


async def set_gift_policy(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    enabled: bool,
    max_points_per_gift: int,
    daily_limit_points: int,
) -> GiftPolicyRecord:
    actor.require(Role.MERCHANT)
    check_points(max_points_per_gift, "maxPointsPerGift")
    check_points(daily_limit_points, "dailyLimitPoints")
    if daily_limit_points < max_points_per_gift:
        raise InvalidInput("the daily limit must be at least one gift's maximum",
                           field=("dailyLimitPoints",))  # fmt: skip
    values = {"enabled": enabled, "max_points_per_gift": max_points_per_gift,
              "daily_limit_points": daily_limit_points}  # fmt: skip
    async with db.transaction() as session:
        program = await session.get(Program, program_id)
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        await session.execute(
            insert(GiftPolicy)
            .values(program_id=program_id, **values)
            .on_conflict_do_update(index_elements=["program_id"],
                                   set_=values | {"updated_at": datetime.now().astimezone()})
        )  # fmt: skip
        await record_audit(session, actor, action="program.gift_policy",
                           target=f"program:{program_id}", before=None, after=values)  # fmt: skip
    return GiftPolicyRecord(program_id, enabled, max_points_per_gift, daily_limit_points)


async def gift_policy(db: Database, program_id: int) -> GiftPolicyRecord:
    """The program's policy (gifts off when it never set one); public program information."""
    row = await db.fetch_one(
        "SELECT program_id, enabled, max_points_per_gift, daily_limit_points FROM gift_policy"
        " WHERE program_id = %(p)s",
        {"p": program_id},
    )
    return GiftPolicyRecord(program_id, False, 0, 0) if row is None else GiftPolicyRecord(*row)


async def give_points(
    db: Database,
    actor: Actor,
    *,
    from_membership_id: int,
    points: int,
    idempotency_key: str,
    to_membership_id: int | None = None,
    to_member_number: str | None = None,
    message: str = "",
) -> GiftResult:
    """Points from one membership to another of the same program, named by membership
    or by the merchant's member number. A member gives from its own membership; the
    merchant's app may send a gift for its member."""
    actor.require(Role.MEMBER, Role.MERCHANT)
    check_points(points)
    check_idempotency_key(idempotency_key)
    message = clean_text(message, "message", max_length=200, required=False) or "points gift"
    if (to_membership_id is None) == (to_member_number is None):
        raise InvalidInput("name the recipient by toMembershipId or toMemberNumber",
                           field=("toMembershipId",))  # fmt: skip
    if to_member_number is not None:
        number = clean_text(to_member_number, "toMemberNumber", max_length=64)
        row = await db.fetch_one(
            "SELECT to_m.id FROM membership from_m JOIN membership to_m"
            " ON to_m.program_id = from_m.program_id AND to_m.member_number = %(n)s"
            " WHERE from_m.id = %(from)s",
            {"n": number, "from": from_membership_id},
        )
        if row is None:
            raise NotFound("no member with this number in the program",
                           field=("toMemberNumber",))  # fmt: skip
        to_membership_id = int(row[0])
    member = actor.member_id if actor.role is Role.MEMBER else None
    fingerprint = request_fingerprint("gift", sender=from_membership_id,
                                      recipient=to_membership_id, points=points,
                                      message=message)  # fmt: skip
    try:
        row = await db.fetch_one(
            "SELECT * FROM points_gift(%(scope)s, %(key)s, %(hash)s, %(client)s,"
            " %(merchant)s::bigint, %(member)s::bigint, %(from)s::bigint, %(to)s::bigint,"
            " %(points)s::bigint, %(message)s, %(tz)s)",
            {"scope": actor.idempotency_scope, "key": idempotency_key, "hash": fingerprint,
             "client": actor.client_id, "merchant": actor.merchant_id, "member": member,
             "from": from_membership_id, "to": to_membership_id, "points": points,
             "message": message, "tz": db.settings.time_zone},
        )  # fmt: skip
    except psycopg.Error as error:
        _raise_gift_error(error)
        raise
    assert row is not None
    return GiftResult(*row)


_GIFT_ERRORS: dict[str, tuple[type[DomainError], str]] = {
    "LA404": (NotFound, "fromMembershipId"),
    "LR404": (NotFound, "toMembershipId"),
    "LA422": (InvalidInput, "points"),
    "LA402": (InsufficientPoints, "points"),
    "LR002": (LimitReached, "points"),
    "LR004": (NotAvailable, "fromMembershipId"),
    "LA423": (Inactive, "toMembershipId"),
}


def _raise_gift_error(error: psycopg.Error) -> None:
    found = _GIFT_ERRORS.get(error.sqlstate or "")
    if found is not None:
        kind, field = found
        raise kind(error.diag.message_primary or str(error), field=(field,)) from None
    raise_domain_error(error)
