"""A member's exchanges between their programs, and spending at partner merchants.

Each points move is one ledger function call (migrations/sql/0007_exchange.sql) that
also writes the settlement obligations, so a move and what the merchants owe for it
commit together or not at all. Only the member moves their own points: the functions
find memberships only among the acting member's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import (
    ExchangeClosed,
    InvalidInput,
    NoExchangeRate,
    NotAccepted,
    NotFound,
    QuoteExpired,
)
from alliance.exchange.models import PartnerAcceptance
from alliance.ledger.service import Movement, raise_domain_error, request_fingerprint
from alliance.programs.models import Program
from alliance.validation import (
    MAX_POINTS,
    check_idempotency_key,
    check_points,
    check_range,
    clean_text,
)

QUOTE_TTL_SECONDS = 120
MAX_QUOTE_TTL_SECONDS = 900


@dataclass(frozen=True, slots=True)
class QuoteRecord:
    id: int
    member_id: int
    from_membership_id: int
    to_membership_id: int
    rate_id: int
    points_in: int
    fee: int
    points_out: int
    remainder: Decimal
    value: Decimal
    expires_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    id: int
    transaction_id: int
    member_id: int
    from_membership_id: int
    to_membership_id: int
    rate_id: int
    quote_id: int | None
    points_in: int
    fee: int
    points_out: int
    remainder: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ExchangeDone:
    exchange: ExchangeRecord
    from_entry_id: int
    to_entry_id: int
    from_balance: int
    to_balance: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class PartnerRedemption:
    movement: Movement
    partner_merchant_id: int
    value: Decimal
    """What the program's merchant owes the partner for it."""


def _raise(error: psycopg.Error) -> None:
    message = str(error.diag.message_primary)
    match error.sqlstate:
        case "LA460":
            raise NoExchangeRate(message, field=("toMembershipId",)) from None
        case "LA461":
            raise ExchangeClosed(message, field=("toMembershipId",)) from None
        case "LA462":
            raise QuoteExpired(message, field=("quoteId",)) from None
        case "LA463":
            raise NotAccepted(message, field=("merchantId",)) from None
        case "LA422":
            raise InvalidInput(message, field=("points",)) from None
        case "23505" if "quote" in (error.diag.constraint_name or ""):
            raise QuoteExpired("the quote was already used", field=("quoteId",)) from None
    raise_domain_error(error)


def _member(actor: Actor) -> int:
    actor.require(Role.MEMBER)
    assert actor.member_id is not None, "member tokens always name their member"
    return actor.member_id


async def quote_exchange(
    db: Database,
    actor: Actor,
    *,
    from_membership_id: int,
    to_membership_id: int,
    points: int,
    ttl_seconds: int = QUOTE_TTL_SECONDS,
) -> QuoteRecord:
    """Lock the rate and fee of an exchange of the member's points for a short time."""
    member_id = _member(actor)
    check_points(points)
    check_range(ttl_seconds, "ttlSeconds", minimum=10, maximum=MAX_QUOTE_TTL_SECONDS)
    try:
        row = await db.fetch_one(
            "SELECT * FROM exchange_quote_create(%(member)s::bigint, %(source)s::bigint,"
            " %(target)s::bigint, %(points)s::bigint, %(ttl)s)",
            {
                "member": member_id,
                "source": from_membership_id,
                "target": to_membership_id,
                "points": points,
                "ttl": ttl_seconds,
            },
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    return QuoteRecord(*row)


async def exchange_points(
    db: Database,
    actor: Actor,
    *,
    idempotency_key: str,
    from_membership_id: int | None = None,
    to_membership_id: int | None = None,
    points: int | None = None,
    quote_id: int | None = None,
) -> ExchangeDone:
    """Exchange the member's points, by a quote or at the rate in force. Idempotent."""
    member_id = _member(actor)
    check_idempotency_key(idempotency_key)
    if points is not None:
        check_points(points)
    if quote_id is not None and (from_membership_id is None or to_membership_id is None):
        row = await db.fetch_one(
            "SELECT from_membership_id, to_membership_id FROM exchange_quote"
            " WHERE id = %(id)s AND member_id = %(member)s",
            {"id": quote_id, "member": member_id},
        )
        if row is None:
            raise NotFound("quote not found", field=("quoteId",))
        from_membership_id, to_membership_id = row
    if from_membership_id is None or to_membership_id is None:
        raise InvalidInput("name both memberships, or a quote", field=("fromMembershipId",))
    if quote_id is None and points is None:
        raise InvalidInput("points are required without a quote", field=("points",))
    fingerprint = request_fingerprint(
        "exchange",
        source=from_membership_id,
        target=to_membership_id,
        points=points,
        quote=quote_id,
    )
    try:
        row = await db.fetch_one(
            "SELECT * FROM ledger_exchange(%(scope)s, %(key)s, %(hash)s, %(client)s,"
            " %(member)s::bigint, %(source)s::bigint, %(target)s::bigint, %(points)s::bigint,"
            " %(quote)s::bigint, %(tz)s)",
            {
                "scope": actor.idempotency_scope,
                "key": idempotency_key,
                "hash": fingerprint,
                "client": actor.client_id,
                "member": member_id,
                "source": from_membership_id,
                "target": to_membership_id,
                "points": points,
                "quote": quote_id,
                "tz": db.settings.time_zone,
            },
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None, "ledger_exchange returns its row"
    *exchange, from_entry, to_entry, from_balance, to_balance, replayed = row
    return ExchangeDone(
        ExchangeRecord(*exchange), from_entry, to_entry, from_balance, to_balance, replayed
    )


async def set_partner_acceptance(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    accepts: bool,
    min_points: int = 1,
    max_points: int | None = None,
) -> bool:
    """Whether the acting merchant takes another merchant's program's points at its
    counters (it is then owed their value by that merchant)."""
    actor.require(Role.MERCHANT)
    check_range(min_points, "minPoints", minimum=1, maximum=MAX_POINTS)
    if max_points is not None:
        check_range(max_points, "maxPoints", minimum=min_points, maximum=MAX_POINTS)
    async with db.transaction() as session:
        owner = await session.scalar(select(Program.merchant_id).where(Program.id == program_id))
        if owner is None:
            raise NotFound("program not found", field=("programId",))
        if owner == actor.merchant_id:
            raise InvalidInput("your own points are spent with spendPoints", field=("programId",))
        key = {"merchant_id": actor.merchant_id, "program_id": program_id}
        if accepts:
            limits = {"min_points": min_points, "max_points": max_points}
            await session.execute(
                pg_insert(PartnerAcceptance)
                .values(**key, **limits)
                .on_conflict_do_update(index_elements=list(key), set_=limits)
            )
        else:
            await session.execute(
                delete(PartnerAcceptance).where(
                    PartnerAcceptance.merchant_id == actor.merchant_id,
                    PartnerAcceptance.program_id == program_id,
                )
            )
        await record_audit(
            session,
            actor,
            action="partner.accept" if accepts else "partner.refuse",
            target=f"program:{program_id}",
            after={"min_points": min_points, "max_points": max_points} if accepts else None,
        )
        return accepts


async def redeem_at_partner(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    merchant_id: int,
    points: int,
    reference: str,
    idempotency_key: str,
) -> PartnerRedemption:
    """Spend the member's points of one program at another merchant. Idempotent."""
    member_id = _member(actor)
    check_points(points)
    check_idempotency_key(idempotency_key)
    reference = clean_text(reference, "reference", max_length=200)
    fingerprint = request_fingerprint(
        "partner",
        membership=membership_id,
        merchant=merchant_id,
        points=points,
        reference=reference,
    )
    try:
        row = await db.fetch_one(
            "SELECT r.*, p.point_value FROM ledger_partner_redeem(%(scope)s, %(key)s, %(hash)s,"
            " %(client)s, %(member)s::bigint, %(membership)s::bigint, %(partner)s::bigint,"
            " %(points)s::bigint, %(reference)s) r JOIN program p ON p.id = r.program_id",
            {
                "scope": actor.idempotency_scope,
                "key": idempotency_key,
                "hash": fingerprint,
                "client": actor.client_id,
                "member": member_id,
                "membership": membership_id,
                "partner": merchant_id,
                "points": points,
                "reference": reference,
            },
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    transaction_id, entry_id, program_id, balance_after, created_at, replayed, point_value = row
    movement = Movement(
        transaction_id,
        entry_id,
        membership_id,
        program_id,
        "partner_redemption",
        reference,
        -points,
        balance_after,
        created_at,
        replayed,
    )
    return PartnerRedemption(movement, merchant_id, points * point_value)


_EXCHANGE_COLUMNS = (
    "e.id, e.id, e.member_id, e.from_membership_id, e.to_membership_id, e.rate_id,"
    " e.quote_id, e.points_in, e.fee, e.points_out, e.remainder, e.created_at"
)


def _visible(actor: Actor) -> tuple[str, dict[str, Any]]:
    """Who sees an exchange: its member; the merchants of its two programs; the
    alliance-wide roles."""
    if actor.is_alliance_wide:
        return "true", {}
    if actor.role is Role.MEMBER:
        return "e.member_id = %(member)s", {"member": actor.member_id}
    return (
        "EXISTS (SELECT 1 FROM membership m JOIN program p ON p.id = m.program_id"
        " WHERE m.id IN (e.from_membership_id, e.to_membership_id)"
        " AND p.merchant_id = %(merchant)s)",
        {"merchant": actor.merchant_id},
    )


async def exchanges_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, ExchangeRecord]:
    condition, params = _visible(actor)
    rows = await db.fetch_all(
        f"SELECT {_EXCHANGE_COLUMNS} FROM exchange e WHERE e.id = ANY(%(ids)s) AND {condition}",
        {"ids": list(ids), **params},
    )
    return {row[0]: ExchangeRecord(*row) for row in rows}


async def exchanges_of_member(
    db: Database, actor: Actor, member_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, tuple[list[ExchangeRecord], bool]]:
    """Newest first, one page per member, in one statement."""
    condition, params = _visible(actor)
    rows = await db.fetch_all(
        f"SELECT parent.id, {_EXCHANGE_COLUMNS} FROM unnest(%(parents)s::bigint[]) AS parent(id)"
        " CROSS JOIN LATERAL (SELECT * FROM exchange e WHERE e.member_id = parent.id"
        f" AND e.id < coalesce(%(after)s::bigint, 9223372036854775807) AND {condition}"
        " ORDER BY e.id DESC LIMIT %(limit)s) e",
        {"parents": list(member_ids), "after": after, "limit": first + 1, **params},
    )
    pages: dict[int, list[ExchangeRecord]] = {member_id: [] for member_id in member_ids}
    for row in rows:
        pages[row[0]].append(ExchangeRecord(*row[1:]))
    return {key: (items[:first], len(items) > first) for key, items in pages.items()}


async def quotes_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, QuoteRecord]:
    """A quote is its member's alone."""
    if actor.role is not Role.MEMBER:
        return {}
    rows = await db.fetch_all(
        "SELECT id, member_id, from_membership_id, to_membership_id, rate_id, points_in, fee,"
        " points_out, remainder, value, expires_at, created_at FROM exchange_quote"
        " WHERE id = ANY(%(ids)s) AND member_id = %(member)s",
        {"ids": list(ids), "member": actor.member_id},
    )
    return {row[0]: QuoteRecord(*row) for row in rows}
