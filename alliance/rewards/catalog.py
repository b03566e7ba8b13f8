"""The reward catalog: merchants create, update (a new version) and archive rewards;
everyone browses them.

A reward's terms are never edited: an update writes version n+1 and points the reward
at it, so every redemption keeps the terms it was reserved under. The catalog is
public program information (like earning rules): every authenticated role may browse
any program's rewards; only the program's merchant changes them.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.paging import MAX_PAGE_SIZE, Page
from alliance.errors import AlreadyExists, InvalidInput, NotFound
from alliance.programs.models import Program
from alliance.rewards.models import (
    STOCK_SLOTS,
    LimitPeriod,
    Reward,
    RewardKind,
    RewardStatus,
    RewardStockSlot,
    RewardVersion,
)
from alliance.validation import (
    check_decimal,
    check_points,
    check_range,
    clean_code,
    clean_text,
)

MAX_IMAGES = 10
MAX_TIERS = 20
MAX_STOCK = 100_000_000


@dataclass(frozen=True, slots=True)
class RewardTerms:
    """What a version of a reward says: its price, limits, audience and window."""

    kind: RewardKind
    name: str
    points_price: int
    description: str = ""
    cash_price: Decimal = Decimal(0)
    limit_total: int | None = None
    limit_per_period: int | None = None
    limit_period: LimitPeriod | None = None
    tier_codes: tuple[str, ...] = ()
    valid_from: datetime | None = None
    """None: from now."""
    valid_until: datetime | None = None
    image_urls: tuple[str, ...] = ()
    reserve_minutes: int = 30
    complete_days: int = 30


@dataclass(frozen=True, slots=True)
class RewardRecord:
    id: int
    program_id: int
    code: str
    status: str
    version: int
    stock: int | None
    stock_issued: int | None
    redeemed: int
    created_at: datetime
    archived_at: datetime | None
    version_id: int
    kind: str
    name: str
    description: str
    points_price: int
    cash_price: Decimal
    limit_total: int | None
    limit_per_period: int | None
    limit_period: str | None
    tier_codes: list[str]
    valid_from: datetime
    valid_until: datetime | None
    image_urls: list[str]
    reserve_minutes: int
    complete_days: int
    version_created_at: datetime


REWARD_SELECT = """
    SELECT r.id, r.program_id, r.code, r.status, r.version, k.stock, r.stock_issued,
           k.redeemed, r.created_at, r.archived_at, v.id, v.kind, v.name, v.description,
           v.points_price, v.cash_price, v.limit_total, v.limit_per_period, v.limit_period,
           v.tier_codes, v.valid_from, v.valid_until, v.image_urls, v.reserve_minutes,
           v.complete_days, v.created_at
      FROM reward r JOIN reward_version v ON v.reward_id = r.id AND v.version = r.version
     CROSS JOIN LATERAL (SELECT sum(s.stock)::bigint AS stock,
                                coalesce(sum(s.redeemed), 0)::bigint AS redeemed
                           FROM reward_stock_slot s WHERE s.reward_id = r.id) k"""


def check_terms(terms: RewardTerms, now: datetime) -> RewardTerms:
    """The terms with clean text and checked numbers; each failure names its field."""
    if terms.kind not in RewardKind:
        raise InvalidInput("unknown reward kind", field=("kind",))
    name = clean_text(terms.name, "name", max_length=200)
    description = clean_text(terms.description, "description", max_length=2000, required=False)
    check_points(terms.points_price, "pointsPrice")
    check_decimal(terms.cash_price, "cashPrice", maximum=Decimal(10**9), places=2,
                  minimum=Decimal(0))  # fmt: skip
    if terms.limit_total is not None:
        check_range(terms.limit_total, "limitTotal", minimum=1, maximum=1_000_000)
    if (terms.limit_per_period is None) != (terms.limit_period is None):
        raise InvalidInput("give limitPerPeriod and limitPeriod together",
                           field=("limitPerPeriod",))  # fmt: skip
    if terms.limit_per_period is not None:
        check_range(terms.limit_per_period, "limitPerPeriod", minimum=1, maximum=1_000_000)
    if len(terms.tier_codes) > MAX_TIERS:
        raise InvalidInput(f"at most {MAX_TIERS} tiers", field=("tierCodes",))
    tiers = tuple(dict.fromkeys(clean_code(code, "tierCodes") for code in terms.tier_codes))
    if len(terms.image_urls) > MAX_IMAGES:
        raise InvalidInput(f"at most {MAX_IMAGES} images", field=("imageUrls",))
    images = tuple(_check_url(url) for url in terms.image_urls)
    for field_name, moment in (("validFrom", terms.valid_from),
                               ("validUntil", terms.valid_until)):  # fmt: skip
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput(f"{field_name} needs a time zone", field=(field_name,))
    valid_from = terms.valid_from or now
    if terms.valid_until is not None and terms.valid_until <= valid_from:
        raise InvalidInput("validUntil must be after validFrom", field=("validUntil",))
    check_range(terms.reserve_minutes, "reserveMinutes", minimum=1, maximum=10080)
    check_range(terms.complete_days, "completeDays", minimum=1, maximum=365)
    return RewardTerms(
        kind=RewardKind(terms.kind), name=name, points_price=terms.points_price,
        description=description, cash_price=terms.cash_price, limit_total=terms.limit_total,
        limit_per_period=terms.limit_per_period, limit_period=terms.limit_period,
        tier_codes=tiers, valid_from=valid_from, valid_until=terms.valid_until,
        image_urls=images, reserve_minutes=terms.reserve_minutes,
        complete_days=terms.complete_days,
    )  # fmt: skip


def _check_url(url: str) -> str:
    url = clean_text(url, "imageUrls", max_length=2000)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or " " in url:
        raise InvalidInput("an image URL must be an absolute http(s) URL", field=("imageUrls",))
    return url


def _striped(units: int | None, slots: int = STOCK_SLOTS) -> list[int | None]:
    """`units` spread over the slots as evenly as can be (None: unlimited in each)."""
    if units is None:
        return [None] * slots
    share, rest = divmod(units, slots)
    return [share + (1 if slot < rest else 0) for slot in range(slots)]


def _version_values(terms: RewardTerms) -> dict[str, Any]:
    return {
        "kind": terms.kind.value, "name": terms.name, "description": terms.description,
        "points_price": terms.points_price, "cash_price": terms.cash_price,
        "limit_total": terms.limit_total, "limit_per_period": terms.limit_per_period,
        "limit_period": None if terms.limit_period is None else terms.limit_period.value,
        "tier_codes": list(terms.tier_codes), "valid_from": terms.valid_from,
        "valid_until": terms.valid_until, "image_urls": list(terms.image_urls),
        "reserve_minutes": terms.reserve_minutes, "complete_days": terms.complete_days,
    }  # fmt: skip


def _audited(terms: RewardTerms, stock: int | None) -> dict[str, Any]:
    values = _version_values(terms)
    values["cash_price"] = str(terms.cash_price)
    for key in ("valid_from", "valid_until"):
        values[key] = None if values[key] is None else values[key].isoformat()
    return values | {"stock": stock}


async def create_reward(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    code: str,
    terms: RewardTerms,
    stock: int | None,
) -> RewardRecord:
    """A new reward in one of the merchant's programs; `stock` None: unlimited."""
    actor.require(Role.MERCHANT)
    code = clean_code(code, "code")
    terms = check_terms(terms, datetime.now(UTC))
    if stock is not None:
        check_range(stock, "stock", minimum=0, maximum=MAX_STOCK)
    try:
        async with db.transaction() as session:
            program = await session.get(Program, program_id)
            if program is None or program.merchant_id != actor.merchant_id:
                raise NotFound("program not found", field=("programId",))
            reward_id = await session.scalar(
                insert(Reward)
                .values(program_id=program_id, code=code, stock_issued=stock)
                .returning(Reward.id)
            )
            await session.execute(
                insert(RewardStockSlot),
                [{"reward_id": reward_id, "slot": slot, "stock": share}
                 for slot, share in enumerate(_striped(stock))],
            )  # fmt: skip
            await session.execute(
                insert(RewardVersion).values(reward_id=reward_id, version=1,
                                             created_by=actor.subject, **_version_values(terms))
            )  # fmt: skip
            await record_audit(session, actor, action="reward.create",
                               target=f"reward:{reward_id}", before=None,
                               after={"code": code, **_audited(terms, stock)})  # fmt: skip
    except IntegrityError:
        raise AlreadyExists(f"reward {code} exists in this program", field=("code",)) from None
    assert reward_id is not None
    return (await _rewards(db, [reward_id]))[reward_id]


async def update_reward(
    db: Database,
    actor: Actor,
    *,
    reward_id: int,
    terms: RewardTerms,
    add_stock: int = 0,
) -> RewardRecord:
    """New terms as version n+1 (redemptions keep the version they were made under);
    `add_stock` more units (a finite stock only)."""
    actor.require(Role.MERCHANT)
    terms = check_terms(terms, datetime.now(UTC))
    check_range(add_stock, "addStock", minimum=0, maximum=MAX_STOCK)
    async with db.transaction() as session:
        # The stock row's lock, alone: reservations take an account lock first, then
        # this one, so this order cannot deadlock with them.
        reward = await session.scalar(
            select(Reward)
            .join(Program, Program.id == Reward.program_id)
            .where(Reward.id == reward_id, Program.merchant_id == actor.merchant_id)
            .with_for_update(of=Reward)
        )
        if reward is None:
            raise NotFound("reward not found", field=("rewardId",))
        if reward.status == RewardStatus.ARCHIVED:
            raise InvalidInput("an archived reward is not updated", field=("rewardId",))
        if add_stock and reward.stock_issued is None:
            raise InvalidInput("the reward's stock is unlimited", field=("addStock",))
        version = reward.version + 1
        await session.execute(
            insert(RewardVersion).values(reward_id=reward_id, version=version,
                                         created_by=actor.subject, **_version_values(terms))
        )  # fmt: skip
        values: dict[str, Any] = {"version": version}
        if add_stock:
            values["stock_issued"] = Reward.stock_issued + add_stock
            # Slots locked in slot order, as the release job locks them.
            slots = list(await session.scalars(
                select(RewardStockSlot.slot).where(RewardStockSlot.reward_id == reward_id)
                .order_by(RewardStockSlot.slot).with_for_update()
            ))  # fmt: skip
            for slot, share in zip(slots, _striped(add_stock, len(slots)), strict=True):
                if share:
                    await session.execute(
                        update(RewardStockSlot)
                        .where(RewardStockSlot.reward_id == reward_id,
                               RewardStockSlot.slot == slot)
                        .values(stock=RewardStockSlot.stock + share)
                    )  # fmt: skip
        await session.execute(update(Reward).where(Reward.id == reward_id).values(**values))
        await record_audit(session, actor, action="reward.update", target=f"reward:{reward_id}",
                           before={"version": reward.version},
                           after={"version": version, "add_stock": add_stock,
                                  **_audited(terms, None)})  # fmt: skip
    return (await _rewards(db, [reward_id]))[reward_id]


async def archive_reward(db: Database, actor: Actor, *, reward_id: int) -> RewardRecord:
    """No more reservations; standing redemptions carry on. Archiving again is a no-op."""
    actor.require(Role.MERCHANT)
    async with db.transaction() as session:
        reward = await session.scalar(
            select(Reward)
            .join(Program, Program.id == Reward.program_id)
            .where(Reward.id == reward_id, Program.merchant_id == actor.merchant_id)
            .with_for_update(of=Reward)
        )
        if reward is None:
            raise NotFound("reward not found", field=("rewardId",))
        if reward.status != RewardStatus.ARCHIVED:
            reward.status = RewardStatus.ARCHIVED.value
            reward.archived_at = datetime.now(UTC)
            await record_audit(session, actor, action="reward.archive",
                               target=f"reward:{reward_id}", before={"status": "active"},
                               after={"status": "archived"})  # fmt: skip
    return (await _rewards(db, [reward_id]))[reward_id]


async def _rewards(db: Database, ids: Sequence[int]) -> dict[int, RewardRecord]:
    rows = await db.fetch_all(REWARD_SELECT + " WHERE r.id = ANY(%(ids)s)", {"ids": list(ids)})
    return {row[0]: RewardRecord(*row) for row in rows}


async def rewards_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, RewardRecord]:
    """Rewards by id: the catalog is readable by every authenticated role."""
    return await _rewards(db, ids)


# -- browsing ------------------------------------------------------------------------


class RewardSort(enum.StrEnum):
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    POPULARITY = "popularity"
    """Most standing redemptions first."""
    NEWEST = "newest"


@dataclass(frozen=True, slots=True)
class RewardFilter:
    kinds: tuple[RewardKind, ...] = ()
    min_points: int | None = None
    max_points: int | None = None
    available_only: bool = True
    """Active, inside the validity window, in stock."""
    affordable_only: bool = False
    """Only what the viewing member can pay with spendable points (members only)."""
    include_archived: bool = False


@dataclass(frozen=True, slots=True)
class RewardCursor:
    sort: RewardSort
    value: int
    id: int

    def encode(self) -> str:
        raw = f"r1:{self.sort.value}:{self.value}:{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str, sort: RewardSort) -> RewardCursor:
        try:
            raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()).decode()
            prefix, sort_name, value, pk = raw.split(":")
            found = cls(RewardSort(sort_name), int(value), int(pk))
            if prefix != "r1" or found.sort is not sort:
                raise ValueError(raw)
            return found
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput("after is not a cursor of this list and order",
                               field=("after",)) from None  # fmt: skip


_ORDER = {
    # (sort key expression, descending)
    RewardSort.PRICE_ASC: ("v.points_price", False),
    RewardSort.PRICE_DESC: ("v.points_price", True),
    RewardSort.POPULARITY: ("k.redeemed", True),
    RewardSort.NEWEST: ("r.id", True),
}


def sort_value(record: RewardRecord, sort: RewardSort) -> int:
    match sort:
        case RewardSort.PRICE_ASC | RewardSort.PRICE_DESC:
            return record.points_price
        case RewardSort.POPULARITY:
            return record.redeemed
    return record.id


@dataclass(frozen=True, slots=True)
class RewardPage:
    page: Page[RewardRecord]
    sort: RewardSort
    cursors: list[str] = field(default_factory=list)


async def browse_rewards(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    filters: RewardFilter,
    sort: RewardSort,
    first: int,
    after: RewardCursor | None,
) -> RewardPage:
    """A page of a program's catalog in the chosen order (keyset on (sort key, id)).
    Popularity changes with every redemption: a later page may repeat or miss a reward
    that moved meanwhile, as any keyset over a live counter does."""
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field=("first",))
    for name, bound in (("minPoints", filters.min_points), ("maxPoints", filters.max_points)):
        if bound is not None:
            check_range(bound, name, minimum=0, maximum=10**12)
    spendable: int | None = None
    if filters.affordable_only:
        if actor.role is not Role.MEMBER:
            raise InvalidInput("affordableOnly is for member tokens", field=("affordableOnly",))
        spendable = await viewer_spendable(db, actor, program_id)
    key, descending = _ORDER[sort]
    conditions = ["r.program_id = %(program)s"]
    params: dict[str, Any] = {"program": program_id, "limit": first + 1}
    if not filters.include_archived or filters.available_only:
        conditions.append("r.status = 'active'")
    if filters.available_only:
        conditions.append("(k.stock IS NULL OR k.stock > 0) AND v.valid_from <= now()"
                          " AND (v.valid_until IS NULL OR v.valid_until > now())")  # fmt: skip
    if filters.kinds:
        conditions.append("v.kind = ANY(%(kinds)s)")
        params["kinds"] = [kind.value for kind in filters.kinds]
    if filters.min_points is not None:
        conditions.append("v.points_price >= %(min_points)s")
        params["min_points"] = filters.min_points
    max_points = filters.max_points
    if spendable is not None:
        max_points = spendable if max_points is None else min(max_points, spendable)
    if max_points is not None:
        conditions.append("v.points_price <= %(max_points)s")
        params["max_points"] = max_points
    if after is not None:
        past = "<" if descending else ">"
        conditions.append(f"({key}, r.id) {past} (%(after_value)s, %(after_id)s)")
        params |= {"after_value": after.value, "after_id": after.id}
    direction = "DESC" if descending else "ASC"
    sql = (f"{REWARD_SELECT} WHERE {' AND '.join(conditions)}"
           f" ORDER BY {key} {direction}, r.id {direction} LIMIT %(limit)s")  # fmt: skip
    rows = await db.fetch_all(sql, params)
    page = Page.from_rows(rows, first, lambda row: RewardRecord(*row))
    cursors = [RewardCursor(sort, sort_value(r, sort), r.id).encode() for r in page.items]
    return RewardPage(page, sort, cursors)


_SPENDABLE = """
    SELECT coalesce(sum(l.remaining) FILTER (WHERE l.available_at <= now()
                        AND (l.expires_at IS NULL OR l.expires_at > now())), 0) - a.held
      FROM membership m JOIN account a ON a.membership_id = m.id
      LEFT JOIN lot l ON l.account_id = a.id AND l.remaining > 0
     WHERE m.program_id = %(program)s AND m.member_id = %(member)s
     GROUP BY a.id, a.held"""


async def viewer_spendable(db: Database, actor: Actor, program_id: int) -> int:
    """The viewing member's spendable points in a program (0 without a membership)."""
    row = await db.fetch_one(_SPENDABLE, {"program": program_id, "member": actor.member_id})
    return 0 if row is None else max(0, int(row[0]))


_CAN_AFFORD = """
    SELECT r.id, v.points_price <= coalesce(
             (SELECT sum(l.remaining) - a.held
                FROM membership m JOIN account a ON a.membership_id = m.id
                JOIN lot l ON l.account_id = a.id AND l.remaining > 0
                          AND l.available_at <= now()
                          AND (l.expires_at IS NULL OR l.expires_at > now())
               WHERE m.program_id = r.program_id AND m.member_id = %(member)s
               GROUP BY a.id, a.held), 0)
      FROM reward r JOIN reward_version v ON v.reward_id = r.id AND v.version = r.version
     WHERE r.id = ANY(%(ids)s)"""


async def can_afford_by_reward(
    db: Database, actor: Actor, reward_ids: Sequence[int]
) -> dict[int, bool | None]:
    """Whether the viewing member's spendable points cover each reward's price, in one
    statement; None for viewers that are not members."""
    if actor.role is not Role.MEMBER or actor.member_id is None:
        return dict.fromkeys(reward_ids, None)
    rows = await db.fetch_all(_CAN_AFFORD, {"ids": list(reward_ids), "member": actor.member_id})
    return {row[0]: bool(row[1]) for row in rows}


_PRICES_IN = """
    SELECT k.reward_id, k.program_id, price.points
      FROM unnest(%(rewards)s::bigint[], %(programs)s::bigint[]) AS k (reward_id, program_id)
      JOIN reward r ON r.id = k.reward_id
      JOIN reward_version v ON v.reward_id = r.id AND v.version = r.version
      JOIN program rp ON rp.id = r.program_id
      JOIN program pp ON pp.id = k.program_id
      LEFT JOIN partner_acceptance a ON a.merchant_id = rp.merchant_id AND a.program_id = pp.id
      LEFT JOIN merchant m ON m.id = a.merchant_id AND m.status = 'active'
     CROSS JOIN LATERAL (SELECT CASE WHEN pp.id = rp.id THEN v.points_price
                                     ELSE reward_partner_price(v.points_price, rp.point_value,
                                                               pp.point_value) END) price (points)
     WHERE pp.id = rp.id
        OR (m.id IS NOT NULL AND pp.merchant_id <> rp.merchant_id
            AND price.points BETWEEN a.min_points AND coalesce(a.max_points, price.points))"""


async def prices_in(
    db: Database, actor: Actor, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """Per (reward, program): what the reward costs in that program's points, when they
    pay for it: its own program's price, or the converted price in a program of another
    merchant whose points the reward's merchant accepts (reward_partner_price, rounded up
    so the value is never less). Absent otherwise. One statement; catalog terms are
    public to every role, as are acceptances."""
    rows = await db.fetch_all(
        _PRICES_IN,
        {"rewards": [reward for reward, _ in keys], "programs": [program for _, program in keys]},
    )
    return {(row[0], row[1]): int(row[2]) for row in rows}
