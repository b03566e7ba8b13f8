"""Redeeming a reward: reserve (points held, stock taken) → fulfil (coupon issued or
shipped) → complete (points spent); or cancel / expire (points and stock given back).

A member may pay for a reward with the points of another merchant's program that the
reward's merchant accepts (partner_acceptance): the price converts at the two programs'
point values, rounded up; the paying account holds the points; completing spends them
as a `partner_redemption` and writes the settlement obligation (the paying merchant owes
the reward's merchant their value), in the same transaction (migrations/sql/
0011_partner_rewards.sql).

Every step is one call of a PL/pgSQL function (migrations/sql/0009_rewards.sql) on an
autocommit connection: one transaction, under the member account's lock. The points
are a `reward` hold of the two-phase holds (alliance/ledger/holds.py), so held points
cannot be spent elsewhere, and the database refuses to release or capture such a hold
except with its redemption.

State machine (anything else is INVALID_TRANSITION):

    reserved  --fulfil-->   fulfilled  --complete / redeemCoupon-->  completed
    reserved  --cancel-->   cancelled  <--cancel (merchant, coupon unused)--  fulfilled
    reserved, fulfilled  --deadline passed, job-->  expired

Repeating a step that already happened (fulfil the same way, complete, cancel) returns
the redemption as it is.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.paging import MAX_PAGE_SIZE, Page
from alliance.errors import (
    Forbidden,
    IdempotencyKeyReused,
    Inactive,
    InsufficientPoints,
    InvalidInput,
    InvalidTransition,
    LimitReached,
    NotAccepted,
    NotAvailable,
    NotEligible,
    NotFound,
    OutOfStock,
    RetryLater,
)
from alliance.ledger.service import raise_domain_error, request_fingerprint
from alliance.rewards.models import RedemptionStatus
from alliance.validation import check_idempotency_key, clean_text

log = logging.getLogger("alliance.rewards")

RELEASE_BATCH = 500
COUPON_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""32 symbols, none easily misread (no 0/O, 1/I): 5 bits each."""
COUPON_LENGTH = 16
"""80 random bits: among a billion live codes, a fresh one collides with chance 2^-50."""
COUPON_CANDIDATES = 3
COUPON_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RedemptionRecord:
    id: int
    reward_id: int
    reward_version_id: int
    program_id: int
    membership_id: int
    member_id: int
    account_id: int
    hold_id: int
    stock_slot: int
    points: int
    cash_price: Decimal
    status: str
    expires_at: datetime
    idempotency_scope: str
    idempotency_key: str
    request_hash: bytes
    fulfilment: str | None
    carrier: str | None
    tracking_number: str | None
    transaction_id: int | None
    created_at: datetime
    fulfilled_at: datetime | None
    closed_at: datetime | None
    paid_program_id: int

    @property
    def partner_paid(self) -> bool:
        """Paid with the points of another merchant's program."""
        return self.paid_program_id != self.program_id


@dataclass(frozen=True, slots=True)
class CouponRecord:
    id: int
    redemption_id: int
    code: str
    status: str
    valid_until: datetime
    used_at: datetime | None
    used_merchant_id: int | None
    used_store: str | None


@dataclass(frozen=True, slots=True)
class Reservation:
    redemption: RedemptionRecord
    replayed: bool


def new_coupon_code() -> str:
    """A coupon code from the OS's CSPRNG, grouped by four for reading out."""
    raw = "".join(secrets.choice(COUPON_ALPHABET) for _ in range(COUPON_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, COUPON_LENGTH, 4))


def _raise(error: psycopg.Error, *, field: str = "redemptionId") -> None:
    message = error.diag.message_primary or str(error)
    match error.sqlstate:
        case "LR404":
            raise NotFound(message, field=(field,)) from None
        case "LR001":
            raise OutOfStock(message, field=("rewardId",)) from None
        case "LR002":
            raise LimitReached(message, field=("rewardId",)) from None
        case "LR003":
            raise NotEligible(message, field=("rewardId",)) from None
        case "LR004":
            raise NotAvailable(message, field=("rewardId",)) from None
        case "LR005":
            raise InvalidTransition(message, field=(field,)) from None
        case "LA404":
            raise NotFound("membership not found", field=("membershipId",)) from None
        case "LA402":
            raise InsufficientPoints("not enough spendable points", field=("rewardId",)) from None
        case "LA409":
            raise IdempotencyKeyReused(message, field=("idempotencyKey",)) from None
        case "LA423":
            raise Inactive(message, field=("membershipId",)) from None
        case "LA422":
            raise InvalidInput(message, field=("rewardId",)) from None
        case "LA403":
            raise Forbidden(message, field=("membershipId",)) from None
        case "LA463":
            raise NotAccepted(message, field=("membershipId",)) from None
    raise_domain_error(error)


def _scope(actor: Actor) -> tuple[int | None, int | None]:
    return actor.merchant_id, actor.member_id if actor.role is Role.MEMBER else None


async def reserve_reward(
    db: Database, actor: Actor, *, membership_id: int, reward_id: int, idempotency_key: str
) -> Reservation:
    """Hold the reward's points price and take a unit of its stock, in one transaction;
    the member in its app, or the merchant for them. A member may pay from a membership
    of another merchant's program that the reward's merchant accepts (in either
    merchant's app); the price is then in that program's points. Idempotent by key."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    check_idempotency_key(idempotency_key)
    merchant, member = _scope(actor)
    fingerprint = request_fingerprint("reserve-reward", membership=membership_id,
                                      reward=reward_id)  # fmt: skip
    try:
        row = await db.fetch_one(
            "SELECT (x.r).*, x.replayed FROM reward_reserve(%(scope)s, %(key)s, %(hash)s,"
            " %(merchant)s::bigint, %(member)s::bigint, %(membership)s::bigint,"
            " %(reward)s::bigint, %(tz)s) x",
            {"scope": actor.idempotency_scope, "key": idempotency_key, "hash": fingerprint,
             "merchant": merchant, "member": member, "membership": membership_id,
             "reward": reward_id, "tz": db.settings.time_zone},
        )  # fmt: skip
    except psycopg.Error as error:
        _raise(error, field="rewardId")
        raise
    assert row is not None
    return Reservation(RedemptionRecord(*row[:-1]), bool(row[-1]))


@dataclass(frozen=True, slots=True)
class Shipment:
    carrier: str
    tracking_number: str


async def fulfil_redemption(
    db: Database, actor: Actor, *, redemption_id: int, shipment: Shipment | None = None
) -> RedemptionRecord:
    """Issue the redemption's coupon code (coupon, discount and experience rewards) or
    record its shipment (goods and gifts). The points stay held until completion."""
    actor.require(Role.MERCHANT)
    carrier = tracking = None
    if shipment is not None:
        carrier = clean_text(shipment.carrier, "carrier", max_length=100)
        tracking = clean_text(shipment.tracking_number, "trackingNumber", max_length=100)
    kind = await _kind_of(db, actor, redemption_id)
    shipped = kind in ("goods", "gift")
    if shipped and shipment is None:
        raise InvalidInput(f"a {kind} reward is shipped: give the shipment",
                           field=("shipment",))  # fmt: skip
    if not shipped and shipment is not None:
        raise InvalidInput(f"a {kind} reward is fulfilled with a coupon code, not shipped",
                           field=("shipment",))  # fmt: skip
    for attempt in range(COUPON_ATTEMPTS):
        codes = [new_coupon_code() for _ in range(COUPON_CANDIDATES)]
        try:
            row = await db.fetch_one(
                "SELECT * FROM reward_fulfil(%(id)s::bigint, %(merchant)s::bigint, %(codes)s,"
                " %(carrier)s, %(tracking)s)",
                {"id": redemption_id, "merchant": actor.merchant_id, "codes": codes,
                 "carrier": carrier, "tracking": tracking},
            )  # fmt: skip
        except psycopg.Error as error:
            if error.sqlstate == "LR409":
                log.warning("coupon codes collided", extra={"attempt": attempt})
                continue
            _raise(error)
            raise
        assert row is not None
        return RedemptionRecord(*row)
    raise RetryLater("no free coupon code was found; send the request again")


async def _kind_of(db: Database, actor: Actor, redemption_id: int) -> str:
    row = await db.fetch_one(
        "SELECT v.kind FROM redemption r JOIN reward_version v ON v.id = r.reward_version_id"
        " JOIN program p ON p.id = r.program_id"
        " WHERE r.id = %(id)s AND p.merchant_id = %(merchant)s",
        {"id": redemption_id, "merchant": actor.merchant_id},
    )
    if row is None:
        raise NotFound("redemption not found", field=("redemptionId",))
    return str(row[0])


async def complete_redemption(
    db: Database, actor: Actor, *, redemption_id: int
) -> RedemptionRecord:
    """Spend the held points of a fulfilled redemption (delivered, or used)."""
    actor.require(Role.MERCHANT)
    try:
        row = await db.fetch_one(
            "SELECT * FROM reward_complete(%(id)s::bigint, %(merchant)s::bigint, %(client)s)",
            {"id": redemption_id, "merchant": actor.merchant_id, "client": actor.client_id},
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    return RedemptionRecord(*row)


async def cancel_redemption(db: Database, actor: Actor, *, redemption_id: int) -> RedemptionRecord:
    """Give the points and the stock back: the member while reserved, the merchant while
    reserved or fulfilled (a coupon not yet used becomes void)."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    merchant, member = _scope(actor)
    try:
        row = await db.fetch_one(
            "SELECT * FROM reward_cancel(%(id)s::bigint, %(merchant)s::bigint, %(member)s::bigint)",
            {"id": redemption_id, "merchant": merchant, "member": member},
        )
    except psycopg.Error as error:
        _raise(error)
        raise
    assert row is not None
    return RedemptionRecord(*row)


@dataclass(frozen=True, slots=True)
class CouponUse:
    coupon_id: int
    redemption_id: int


async def redeem_coupon(db: Database, actor: Actor, *, code: str, store: str) -> CouponUse:
    """Use a coupon at the counter of the program's merchant, once; the redemption is
    completed with it (its held points are spent)."""
    actor.require(Role.MERCHANT)
    code = clean_text(code, "code", max_length=64).upper()
    store = clean_text(store, "store", max_length=100)
    try:
        row = await db.fetch_one(
            "SELECT * FROM reward_redeem_coupon(%(code)s, %(merchant)s::bigint, %(store)s,"
            " %(client)s)",
            {"code": code, "merchant": actor.merchant_id, "store": store,
             "client": actor.client_id},
        )  # fmt: skip
    except psycopg.Error as error:
        _raise(error, field="code")
        raise
    assert row is not None
    return CouponUse(int(row[0]), int(row[1]))


async def release_expired_redemptions(
    db: Database, *, now: datetime | None = None, batch_size: int = RELEASE_BATCH
) -> int:
    """Release every redemption past its deadline (points, coupon, stock); returns how
    many. Safe to run concurrently: each redemption is released once."""
    released = 0
    while True:
        row = await db.fetch_one(
            "SELECT reward_release_expired(coalesce(%(now)s, now()), %(limit)s)",
            {"now": now, "limit": batch_size},
        )
        count = int(row[0]) if row else 0
        released += count
        if count == 0:
            if released:
                log.info("released expired redemptions", extra={"redemptions": released})
            return released


# -- reads ---------------------------------------------------------------------------

# A member's token is its app's: the member sees their redemptions in the app of the
# reward's merchant and in that of the merchant whose points paid (reward_redemption_
# locked, 0011, agrees). A merchant sees its rewards' redemptions, not its members'
# redemptions at partners (its ledger shows their spends).
_VISIBLE = """
       (%(merchant)s::bigint IS NULL OR p.merchant_id = %(merchant)s::bigint
        OR (%(member)s::bigint IS NOT NULL
            AND (SELECT pp.merchant_id FROM program pp WHERE pp.id = r.paid_program_id)
                = %(merchant)s::bigint))
   AND (%(member)s::bigint IS NULL OR r.member_id = %(member)s::bigint)"""

_REDEMPTIONS = f"""
    SELECT r.* FROM redemption r JOIN program p ON p.id = r.program_id
     WHERE r.{{column}} = ANY(%(ids)s) AND {_VISIBLE}"""


def _visibility(actor: Actor) -> dict[str, int | None]:
    """Like holds: the alliance-wide roles see all, a merchant (or its finance) its
    programs', a member its own (see _VISIBLE)."""
    merchant = None if actor.is_alliance_wide else actor.merchant_id
    member = actor.member_id if actor.role is Role.MEMBER else None
    return {"merchant": merchant, "member": member}


async def redemptions_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, RedemptionRecord]:
    rows = await db.fetch_all(_REDEMPTIONS.format(column="id"),
                              {"ids": list(ids), **_visibility(actor)})  # fmt: skip
    return {row[0]: RedemptionRecord(*row) for row in rows}


async def coupons_by_redemption(
    db: Database, actor: Actor, redemption_ids: Sequence[int]
) -> dict[int, CouponRecord]:
    rows = await db.fetch_all(
        "SELECT c.id, c.redemption_id, c.code, c.status, c.valid_until, c.used_at,"
        " c.used_merchant_id, c.used_store FROM coupon c JOIN redemption r"
        " ON r.id = c.redemption_id JOIN program p ON p.id = r.program_id"
        f" WHERE c.redemption_id = ANY(%(ids)s) AND {_VISIBLE}",
        {"ids": list(redemption_ids), **_visibility(actor)},
    )
    return {row[1]: CouponRecord(*row) for row in rows}


async def redemption_pages_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[RedemptionRecord]]:
    """Newest first, one page per membership, in one statement."""
    rows = await db.fetch_all(
        "SELECT m.id, page.* FROM unnest(%(ids)s::bigint[]) AS m (id)"
        " CROSS JOIN LATERAL (SELECT r.* FROM redemption r JOIN program p"
        " ON p.id = r.program_id WHERE r.membership_id = m.id"
        " AND (%(after)s::bigint IS NULL OR r.id < %(after)s::bigint)"
        f" AND {_VISIBLE} ORDER BY r.id DESC LIMIT %(limit)s) page",
        {"ids": list(membership_ids), "after": after, "limit": first + 1,
         **_visibility(actor)},
    )  # fmt: skip
    grouped: dict[int, list[RedemptionRecord]] = {pk: [] for pk in membership_ids}
    for row in rows:
        grouped[row[0]].append(RedemptionRecord(*row[1:]))
    return {pk: Page(items[:first], len(items) > first) for pk, items in grouped.items()}


async def redemptions_of_reward(
    db: Database,
    actor: Actor,
    *,
    reward_id: int,
    status: str | None,
    first: int,
    after: int | None,
) -> Page[RedemptionRecord]:
    """A reward's redemptions, oldest first (a fulfilment queue with status `reserved`):
    for the program's merchant, its finance, and the alliance-wide roles."""
    actor.require(Role.OPERATOR, Role.AUDITOR, Role.FINANCE, Role.MERCHANT)
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field=("first",))
    if status is not None and status not in set(RedemptionStatus):
        raise InvalidInput("unknown redemption status", field=("status",))
    rows = await db.fetch_all(
        "SELECT r.* FROM redemption r JOIN program p ON p.id = r.program_id"
        " WHERE r.reward_id = %(reward)s"
        " AND (%(status)s::text IS NULL OR r.status = %(status)s::text)"
        " AND (%(after)s::bigint IS NULL OR r.id > %(after)s::bigint)"
        " AND (%(merchant)s::bigint IS NULL OR p.merchant_id = %(merchant)s::bigint)"
        " ORDER BY r.id LIMIT %(limit)s",
        {"reward": reward_id, "status": status, "after": after, "limit": first + 1,
         "merchant": _visibility(actor)["merchant"]},
    )  # fmt: skip
    return Page.from_rows(rows, first, lambda row: RedemptionRecord(*row))


async def version_numbers(db: Database, actor: Actor, version_ids: Sequence[int]) -> dict[int, int]:
    """The version number of each reward version (terms are public catalog information)."""
    rows = await db.fetch_all(
        "SELECT id, version FROM reward_version WHERE id = ANY(%(ids)s)", {"ids": list(version_ids)}
    )
    return {row[0]: row[1] for row in rows}
