"""GraphQL object types: thin views over the domain's records.

Every relation resolves through a per-request DataLoader (`info.context.loaders`),
and every list is a Relay connection over a keyset page.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeVar

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader

from alliance.auth.models import Role
from alliance.db.paging import Page
from alliance.errors import InvalidInput, NotFound
from alliance.ledger.service import Movement
from alliance.members.queries import (
    HistoryEntry,
    HistoryFilter,
    LotRecord,
    MemberRecord,
    MembershipRecord,
)
from alliance.programs.models import ExpiryPolicy
from alliance.programs.queries import MerchantRecord, ProgramRecord
from alliance.rules.earning import breakdown_from_json
from alliance.rules.engine import Cap, CapPeriod, Stacking
from alliance.rules.service import ClawbackPolicy
from schema.context import Info
from schema.loaders import PageArgs
from schema.pagination import DEFAULT_PAGE_SIZE, build_connection, check_first, decode_cursor
from schema.scalars import BigInt

# The domain enums are the GraphQL enums: registering them keeps one definition.
strawberry.enum(Role, name="Role")
strawberry.enum(ExpiryPolicy, name="ExpiryPolicy")


@strawberry.enum(description="What moved the points.")
class EntryKind(enum.Enum):
    AWARD = "award"
    EARN = "earn"
    SPEND = "spend"
    EXPIRE = "expire"
    REVERSE = "reverse"
    OPENING = "opening"
    """An opening balance imported from the merchant's previous system."""
    REFUND = "refund"
    """Points of a paid discount given back."""
    EXCHANGE = "exchange"
    """Points exchanged to or from another program."""
    PARTNER_REDEMPTION = "partner_redemption"
    """Points spent at a partner merchant."""
    MERGE = "merge"
    """Points carried between members' accounts by a merge or an unlink."""
    GIFT = "gift"
    """Points given by one member to another of the same program."""
    ADJUSTMENT = "adjustment"
    """A manual credit or debit by the merchant's staff (maker-checker)."""


strawberry.enum(CapPeriod, name="CapPeriod")
strawberry.enum(ClawbackPolicy, name="ClawbackPolicy")


@strawberry.type(description="At most `points` per member per period (alliance time zone).")
class EarnCap:
    period: CapPeriod
    points: BigInt

    @classmethod
    def from_stored(cls, stored: list[dict[str, Any]] | None) -> list[EarnCap]:
        return [EarnCap(period=CapPeriod(c["period"]), points=BigInt(c["points"]))
                for c in stored or ()]  # fmt: skip


@strawberry.input(description="At most `points` per member per period (alliance time zone).")
class CapInput:
    period: CapPeriod
    points: int

    def to_domain(self) -> Cap:
        return Cap(self.period, self.points)


if TYPE_CHECKING:
    from schema.identity import MemberIdentifier
    from schema.rules import EarnBreakdown, EarningRuleConnection
    from schema.tiers import Tier, TierChangeConnection, TierConnection, TierPolicy, TierProgress

C = TypeVar("C", bound=relay.Connection[Any])


def _pks(node_ids: Iterable[str]) -> list[int | None]:
    """Primary keys from node ids; a malformed id resolves to nothing, like a missing one."""
    keys: list[int | None] = []
    for node_id in node_ids:
        keys.append(int(node_id) if node_id.isdigit() and len(node_id) < 19 else None)
    return keys


def node_pk(global_id: relay.GlobalID, node_type: type[relay.Node], field: str) -> int:
    """The primary key behind an input id, which must name a `node_type`."""
    name = node_type.__name__
    if (
        global_id.type_name != name
        or not global_id.node_id.isdigit()
        or len(global_id.node_id) >= 19
    ):
        raise NotFound(f"no {name} with this id", field=(field,))
    return int(global_id.node_id)


async def load_nodes(loader: Any, node_ids: Iterable[str], make: Any) -> list[Any]:
    keys = _pks(node_ids)
    found = await loader.load_many([key for key in keys if key is not None])
    by_key = dict(zip([key for key in keys if key is not None], found, strict=True))
    return [make(by_key[key]) if key is not None and by_key[key] else None for key in keys]


def _page_args(first: int, after: str | None, filters: HistoryFilter | None = None) -> PageArgs:
    return PageArgs(check_first(first), decode_cursor(after), filters)


_BY_ID = attrgetter("id")
_BY_POSTING = attrgetter("posting_id")
_BY_RANK = attrgetter("rank")


async def _connection(
    loader: DataLoader[tuple[int, PageArgs], Page[Any]],
    parent_id: int,
    args: PageArgs,
    connection: type[C],
    node: Callable[[Any], Any],
    key: Callable[[Any], int],
) -> C:
    """One page of a parent's list, batched with its siblings' by the loader."""
    page = await loader.load((parent_id, args))
    return build_connection(connection, page, node, key, after=args.after)


def page_connection(
    connection: type[C],
    items: Sequence[Any],
    has_next_page: bool,
    node: Callable[[Any], Any],
    *,
    after: int | None,
    key: Callable[[Any], int] = _BY_ID,
) -> C:
    """A connection over one page a domain read returned as (items, has_next_page)."""
    return build_connection(connection, Page(items, has_next_page), node, key, after=after)


page_args = _page_args
connection_of = _connection


@strawberry.type(description="A merchant of the alliance: a brand with its own points programs.")
class Merchant(relay.Node):
    id: relay.NodeID[int]
    code: str
    name: str
    status: str
    created_at: datetime

    @classmethod
    def from_record(cls, record: MerchantRecord) -> Self:
        return cls(
            id=record.id,
            code=record.code,
            name=record.name,
            status=record.status,
            created_at=record.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.merchant, node_ids, cls.from_record)

    @strawberry.field(description="The merchant's programs, oldest first.")
    async def programs(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> ProgramConnection:
        loader = info.context.loaders.programs_of_merchant
        return await _connection(
            loader,
            self.id,
            _page_args(first, after),
            ProgramConnection,
            Program.from_record,
            _BY_ID,
        )


@strawberry.type(description="A points program of one merchant.")
class Program(relay.Node):
    id: relay.NodeID[int]
    merchant_id: strawberry.Private[int]
    code: str
    name: str
    unit_name: str
    point_value: Decimal = strawberry.field(
        description="Worth of one point in the settlement currency: the liability per point."
    )
    currency: str
    expiry_policy: ExpiryPolicy
    expiry_value: int
    pending_days: int
    status: str
    created_at: datetime
    stacking: strawberry.Private[str]
    clawback_policy: ClawbackPolicy = strawberry.field(
        description="What a refund does with points already spent."
    )
    earn_caps: list[EarnCap] = strawberry.field(
        description="Per member caps on all rule-based earning."
    )
    discount_max_share: Decimal = strawberry.field(
        description="The largest share of a bill points may pay at the counter."
    )
    discount_min_points: int = strawberry.field(description="The fewest points a discount uses.")

    @classmethod
    def from_record(cls, r: ProgramRecord) -> Self:
        return cls(
            id=r.id,
            merchant_id=r.merchant_id,
            code=r.code,
            name=r.name,
            unit_name=r.unit_name,
            point_value=r.point_value,
            currency=r.currency,
            expiry_policy=ExpiryPolicy(r.expiry_policy),
            expiry_value=r.expiry_value,
            pending_days=r.pending_days,
            status=r.status,
            created_at=r.created_at,
            stacking=r.promotion_stacking,
            clawback_policy=ClawbackPolicy(r.clawback_policy),
            earn_caps=EarnCap.from_stored(r.earn_caps),
            discount_max_share=r.discount_max_share,
            discount_min_points=r.discount_min_points,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.program, node_ids, cls.from_record)

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant:
        record = await info.context.loaders.merchant.load(self.merchant_id)
        assert record is not None, "a program's merchant is always readable"
        return Merchant.from_record(record)

    @strawberry.field(
        description="Points held by members now. Null for another merchant's program."
    )
    async def outstanding_points(self, info: Info) -> BigInt | None:
        points = await info.context.loaders.outstanding_points.load(self.id)
        return None if points is None else BigInt(points)

    @strawberry.field(description="How promotion multipliers combine in this program.")
    def promotion_stacking(self) -> Stacking:
        return Stacking(self.stacking)

    @strawberry.field(description="The newest version of each earning rule, oldest rule first.")
    async def earning_rules(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Annotated[EarningRuleConnection, strawberry.lazy("schema.rules")]:
        from schema.rules import EarningRule, EarningRuleConnection

        loader = info.context.loaders.rules_of_program
        return await _connection(
            loader, self.id, _page_args(first, after), EarningRuleConnection,
            EarningRule.from_record, _BY_ID,
        )  # fmt: skip

    @strawberry.field(description="The tier ladder in force, from the entry tier up.")
    async def tiers(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Annotated[TierConnection, strawberry.lazy("schema.tiers")]:
        from schema.tiers import Tier, TierConnection

        loader = info.context.loaders.tiers_of_program
        return await _connection(
            loader, self.id, _page_args(first, after), TierConnection, Tier.from_record,
            _BY_RANK,
        )  # fmt: skip

    @strawberry.field(description="How members qualify for tiers; null without a tier ladder.")
    async def tier_policy(
        self, info: Info
    ) -> Annotated[TierPolicy, strawberry.lazy("schema.tiers")] | None:
        from schema.tiers import TierPolicy

        ladder = await info.context.loaders.tier_policy.load(self.id)
        return None if ladder is None else TierPolicy.from_ladder(ladder)

    @strawberry.field(description="Memberships of this program you may see, oldest first.")
    async def memberships(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> MembershipConnection:
        loader = info.context.loaders.memberships_of_program
        return await _connection(
            loader,
            self.id,
            _page_args(first, after),
            MembershipConnection,
            Membership.from_record,
            _BY_ID,
        )


@strawberry.type(description="One person in the alliance, across all merchants.")
class Member(relay.Node):
    id: relay.NodeID[int]
    display_name: str | None
    created_at: datetime

    @classmethod
    def from_record(cls, r: MemberRecord) -> Self:
        return cls(id=r.id, display_name=r.display_name, created_at=r.created_at)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.member, node_ids, cls.from_record)

    @strawberry.field(description="The memberships you may see, oldest first.")
    async def memberships(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> MembershipConnection:
        loader = info.context.loaders.memberships_of_member
        return await _connection(
            loader,
            self.id,
            _page_args(first, after),
            MembershipConnection,
            Membership.from_record,
            _BY_ID,
        )

    @strawberry.field(description="Verified phones and e-mail addresses (identity federation).")
    async def identifiers(self, info: Info) -> list[Annotated[
        MemberIdentifier, strawberry.lazy("schema.identity")
    ]]:  # fmt: skip
        from schema.identity import member_identifiers

        return await member_identifiers(info, self.id)

    @strawberry.field(description="Balance per program, one per membership you may see.")
    async def balances(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> BalanceConnection:
        loader = info.context.loaders.memberships_of_member
        return await _connection(
            loader,
            self.id,
            _page_args(first, after),
            BalanceConnection,
            Balance.from_membership,
            _BY_ID,
        )

    @strawberry.field(description="Points history across programs, newest first.")
    async def transactions(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        program_id: relay.GlobalID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> LedgerEntryConnection:
        program_pk = None if program_id is None else node_pk(program_id, Program, "programId")
        loader = info.context.loaders.history_of_member
        return await _connection(
            loader,
            self.id,
            _page_args(first, after, HistoryFilter(program_pk, since, until)),
            LedgerEntryConnection,
            LedgerEntry.from_entry,
            _BY_POSTING,
        )


@strawberry.type(description="A member's account at one program, under the merchant's number.")
class Membership(relay.Node):
    id: relay.NodeID[int]
    member_id: strawberry.Private[int]
    program_id: strawberry.Private[int]
    record: strawberry.Private[MembershipRecord]
    member_number: str = strawberry.field(description="The merchant's own number for the member.")
    status: str
    created_at: datetime
    segments: list[str] = strawberry.field(
        description="The merchant's segments for this member, named by promotion audiences."
    )
    # Made with the membership (under a microsecond) rather than by a resolver: a plain
    # field is completed by plan (schema/execution.py), ~15 µs less per balance read.
    balance: Balance

    @classmethod
    def from_record(cls, r: MembershipRecord) -> Self:
        return cls(
            id=r.id,
            member_id=r.member_id,
            program_id=r.program_id,
            record=r,
            member_number=r.member_number,
            status=r.status,
            created_at=r.created_at,
            segments=r.segments,
            balance=Balance.from_membership(r),
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.membership, node_ids, cls.from_record)

    @strawberry.field
    async def program(self, info: Info) -> Program:
        record = await info.context.loaders.program.load(self.program_id)
        assert record is not None, "programs are readable by every actor"
        return Program.from_record(record)

    @strawberry.field
    async def member(self, info: Info) -> Member | None:
        record = await info.context.loaders.member.load(self.member_id)
        return None if record is None else Member.from_record(record)

    @strawberry.field(description="Points that expire within the next `withinDays` days (0-3650).")
    async def points_expiring(self, info: Info, within_days: int = 30) -> BigInt:
        if not 0 <= within_days <= 3650:
            raise InvalidInput("withinDays must be between 0 and 3650", field=("withinDays",))
        return BigInt(await info.context.loaders.expiring_points.load((self.id, within_days)))

    @strawberry.field(description="Lots with points left, oldest first: what expires when.")
    async def lots(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> PointsLotConnection:
        loader = info.context.loaders.lots_of_membership
        return await _connection(
            loader, self.id, _page_args(first, after), PointsLotConnection,
            PointsLot.from_record, _BY_ID,
        )  # fmt: skip

    @strawberry.field(description="The tier held now; null when the program has no tiers.")
    async def tier(self, info: Info) -> Annotated[Tier, strawberry.lazy("schema.tiers")] | None:
        from schema.tiers import Tier

        record = await info.context.loaders.held_tier.load(self.id)
        return None if record is None else Tier.from_record(record)

    @strawberry.field(description="Changes of this membership's tier, newest first.")
    async def tier_history(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Annotated[TierChangeConnection, strawberry.lazy("schema.tiers")]:
        from schema.tiers import TierChange, TierChangeConnection

        loader = info.context.loaders.tier_history_of_membership
        return await _connection(
            loader, self.id, _page_args(first, after), TierChangeConnection,
            TierChange.from_record, _BY_ID,
        )  # fmt: skip

    @strawberry.field(
        description="What the membership has and needs on the tier ladder; null without one."
    )
    async def tier_progress(
        self, info: Info
    ) -> Annotated[TierProgress, strawberry.lazy("schema.tiers")] | None:
        from schema.tiers import TierProgress

        standing = await info.context.loaders.tier_standing.load(self.id)
        return None if standing is None else TierProgress.from_standing(standing)

    @strawberry.field(description="Points history of this membership, newest first.")
    async def transactions(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> LedgerEntryConnection:
        loader = info.context.loaders.history_of_membership
        return await _connection(
            loader,
            self.id,
            _page_args(first, after, HistoryFilter(None, since, until)),
            LedgerEntryConnection,
            LedgerEntry.from_entry,
            _BY_POSTING,
        )


@strawberry.type(description="Points of one membership.")
class Balance:
    membership_id: strawberry.Private[int]
    program_id: strawberry.Private[int]
    points: BigInt = strawberry.field(
        description="All points in the account, including held, pending and not yet swept."
    )
    held: BigInt = strawberry.field(description="Reserved by open holds.")
    clawback_debt: BigInt = strawberry.field(
        description="Points refunds took back after they were spent; future credits repay "
        "this first."
    )

    @classmethod
    def from_membership(cls, r: MembershipRecord) -> Self:
        return cls(
            membership_id=r.id,
            program_id=r.program_id,
            points=BigInt(r.balance),
            held=BigInt(r.held),
            clawback_debt=BigInt(r.debt),
        )

    @strawberry.field(description="Points spendable now: available, unexpired lots minus holds.")
    async def spendable(self, info: Info) -> BigInt:
        return BigInt(await info.context.loaders.spendable_points.load(self.membership_id) or 0)

    @strawberry.field
    async def program(self, info: Info) -> Program:
        record = await info.context.loaders.program.load(self.program_id)
        assert record is not None, "programs are readable by every actor"
        return Program.from_record(record)

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)


@strawberry.type(description="One movement of points on a member account.")
class LedgerEntry(relay.Node):
    id: relay.NodeID[int]
    program_id: strawberry.Private[int]
    transaction_id: strawberry.Private[int]
    kind: EntryKind
    reason: str | None
    points: BigInt = strawberry.field(description="Signed change of the balance.")
    balance_after: BigInt
    created_at: datetime

    @classmethod
    def from_entry(cls, e: HistoryEntry) -> Self:
        return cls(
            id=e.posting_id,
            program_id=e.program_id,
            transaction_id=e.transaction_id,
            kind=EntryKind(e.kind),
            reason=e.reason,
            points=BigInt(e.points),
            balance_after=BigInt(e.balance_after),
            created_at=e.created_at,
        )

    @classmethod
    def from_movement(cls, movement: Movement) -> Self:
        return cls(
            id=movement.entry_id,
            program_id=movement.program_id,
            transaction_id=movement.transaction_id,
            kind=EntryKind(movement.kind),
            reason=movement.reason,
            points=BigInt(movement.points),
            balance_after=BigInt(movement.balance_after),
            created_at=movement.created_at,
        )

    @strawberry.field(description="For earns: the rule versions that gave these points.")
    async def breakdown(
        self, info: Info
    ) -> Annotated[EarnBreakdown, strawberry.lazy("schema.rules")] | None:
        from schema.rules import EarnBreakdown

        if self.kind is not EntryKind.EARN:
            return None
        stored = await info.context.loaders.earn_details.load(self.transaction_id)
        return None if stored is None else EarnBreakdown.from_breakdown(breakdown_from_json(stored))

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.entry, node_ids, cls.from_entry)

    @strawberry.field
    async def program(self, info: Info) -> Program:
        record = await info.context.loaders.program.load(self.program_id)
        assert record is not None, "programs are readable by every actor"
        return Program.from_record(record)


@strawberry.type(description="The points of one earn still in an account.")
class PointsLot:
    amount: BigInt = strawberry.field(description="Points the earn created.")
    remaining: BigInt = strawberry.field(description="Points of it not yet spent or expired.")
    available_at: datetime = strawberry.field(description="When they became spendable.")
    expires_at: datetime | None = strawberry.field(description="Null: they never expire.")
    earned_at: datetime

    @classmethod
    def from_record(cls, r: LotRecord) -> Self:
        return cls(
            amount=BigInt(r.amount), remaining=BigInt(r.remaining), available_at=r.available_at,
            expires_at=r.expires_at, earned_at=r.created_at,
        )  # fmt: skip


@strawberry.type(name="PointsLotConnection")
class PointsLotConnection(relay.Connection[PointsLot]):  # type: ignore[type-var]  # values
    pass


@strawberry.type(name="MerchantConnection")
class MerchantConnection(relay.Connection[Merchant]):
    pass


@strawberry.type(name="ProgramConnection")
class ProgramConnection(relay.Connection[Program]):
    pass


@strawberry.type(name="MembershipConnection")
class MembershipConnection(relay.Connection[Membership]):
    pass


@strawberry.type(name="BalanceConnection")
class BalanceConnection(relay.Connection[Balance]):  # type: ignore[type-var]  # a value, not a Node
    pass


@strawberry.type(name="LedgerEntryConnection")
class LedgerEntryConnection(relay.Connection[LedgerEntry]):
    pass


@strawberry.type(description="Who is calling.")
class Viewer:
    role: Role
    client_id: str
    merchant_id: strawberry.Private[int | None]
    member_id: strawberry.Private[int | None]
    membership_id: strawberry.Private[int | None]

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant | None:
        if self.merchant_id is None:
            return None
        record = await info.context.loaders.merchant.load(self.merchant_id)
        return None if record is None else Merchant.from_record(record)

    @strawberry.field
    async def member(self, info: Info) -> Member | None:
        if self.member_id is None:
            return None
        record = await info.context.loaders.member.load(self.member_id)
        return None if record is None else Member.from_record(record)

    @strawberry.field(description="For member tokens: the membership the token is bound to.")
    async def membership(self, info: Info) -> Membership | None:
        if self.membership_id is None:
            return None
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)
