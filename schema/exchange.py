"""GraphQL for exchange between programs and spending at partner merchants."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.exchange import rates as exchange_rates
from alliance.exchange import service as exchanges
from alliance.exchange.rates import RateRecord
from alliance.exchange.service import ExchangeRecord, QuoteRecord
from schema.context import Info
from schema.errors import UserError, mutate
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import (
    LedgerEntry,
    Membership,
    Merchant,
    Program,
    connection_of,
    load_nodes,
    node_pk,
    page_args,
    page_connection,
)

authenticated: list[type[BasePermission]] = [IsAuthenticated]


async def _program(info: Info, program_id: int) -> Program | None:
    record = await info.context.loaders.program.load(program_id)
    return None if record is None else Program.from_record(record)


async def _membership(info: Info, membership_id: int) -> Membership | None:
    record = await info.context.loaders.membership.load(membership_id)
    return None if record is None else Membership.from_record(record)


async def _entry(info: Info, entry_id: int) -> LedgerEntry | None:
    record = await info.context.loaders.entry.load(entry_id)
    return None if record is None else LedgerEntry.from_entry(record)


@strawberry.type(description="One version of the published rate between two programs.")
class ExchangeRate(relay.Node):
    id: relay.NodeID[int]
    from_program_id: strawberry.Private[int]
    to_program_id: strawberry.Private[int]
    version: int
    rate: str = strawberry.field(description="Target points per source point, exact: 'n/d'.")
    fee_percent: Decimal = strawberry.field(description="Of the points in, rounded up.")
    fee_points: BigInt = strawberry.field(description="Fixed fee, in source points.")
    min_points: BigInt
    max_points: BigInt | None
    valid_from: datetime
    valid_until: datetime | None
    withdrawn: bool = strawberry.field(description="This version closes the pair.")
    created_at: datetime

    @classmethod
    def from_record(cls, r: RateRecord) -> Self:
        return cls(
            id=r.id,
            from_program_id=r.from_program_id,
            to_program_id=r.to_program_id,
            version=r.version,
            rate=f"{r.numerator}/{r.denominator}",
            fee_percent=r.fee_percent,
            fee_points=BigInt(r.fee_points),
            min_points=BigInt(r.min_points),
            max_points=None if r.max_points is None else BigInt(r.max_points),
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            withdrawn=r.withdrawn,
            created_at=r.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.exchange_rate, node_ids, cls.from_record)

    @strawberry.field
    async def from_program(self, info: Info) -> Program | None:
        return await _program(info, self.from_program_id)

    @strawberry.field
    async def to_program(self, info: Info) -> Program | None:
        return await _program(info, self.to_program_id)


@strawberry.type(name="ExchangeRateConnection")
class ExchangeRateConnection(relay.Connection[ExchangeRate]):
    pass


@strawberry.type(
    description="Rate and fee locked for you until `expiresAt`; one exchange may use it."
)
class ExchangeQuote(relay.Node):
    id: relay.NodeID[int]
    from_membership_id: strawberry.Private[int]
    to_membership_id: strawberry.Private[int]
    rate_id: strawberry.Private[int]
    points_in: BigInt
    fee: BigInt = strawberry.field(description="Source points taken as the fee.")
    points_out: BigInt = strawberry.field(description="Target points you get (floored).")
    remainder: Decimal = strawberry.field(
        description="The fraction of a target point not given (floor for the member)."
    )
    value: Decimal = strawberry.field(
        description="pointsOut × the target program's point value, in the settlement currency."
    )
    expires_at: datetime

    @classmethod
    def from_record(cls, r: QuoteRecord) -> Self:
        return cls(
            id=r.id,
            from_membership_id=r.from_membership_id,
            to_membership_id=r.to_membership_id,
            rate_id=r.rate_id,
            points_in=BigInt(r.points_in),
            fee=BigInt(r.fee),
            points_out=BigInt(r.points_out),
            remainder=r.remainder,
            value=r.value,
            expires_at=r.expires_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.exchange_quote, node_ids, cls.from_record)

    @strawberry.field
    async def rate(self, info: Info) -> ExchangeRate | None:
        record = await info.context.loaders.exchange_rate.load(self.rate_id)
        return None if record is None else ExchangeRate.from_record(record)


@strawberry.type(description="Points of one program turned into points of another.")
class Exchange(relay.Node):
    id: relay.NodeID[int]
    from_membership_id: strawberry.Private[int]
    to_membership_id: strawberry.Private[int]
    rate_id: strawberry.Private[int]
    points_in: BigInt
    fee: BigInt
    points_out: BigInt
    remainder: Decimal
    created_at: datetime

    @classmethod
    def from_record(cls, r: ExchangeRecord) -> Self:
        return cls(
            id=r.id,
            from_membership_id=r.from_membership_id,
            to_membership_id=r.to_membership_id,
            rate_id=r.rate_id,
            points_in=BigInt(r.points_in),
            fee=BigInt(r.fee),
            points_out=BigInt(r.points_out),
            remainder=r.remainder,
            created_at=r.created_at,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.exchange, node_ids, cls.from_record)

    @strawberry.field(description="Null where you may not see it (another merchant's).")
    async def from_membership(self, info: Info) -> Membership | None:
        return await _membership(info, self.from_membership_id)

    @strawberry.field(description="Null where you may not see it (another merchant's).")
    async def to_membership(self, info: Info) -> Membership | None:
        return await _membership(info, self.to_membership_id)

    @strawberry.field
    async def rate(self, info: Info) -> ExchangeRate | None:
        record = await info.context.loaders.exchange_rate.load(self.rate_id)
        return None if record is None else ExchangeRate.from_record(record)


@strawberry.type(name="ExchangeConnection")
class ExchangeConnection(relay.Connection[Exchange]):
    pass


@strawberry.input
class PublishExchangeRateInput:
    from_program_id: relay.GlobalID
    to_program_id: relay.GlobalID
    rate: str = strawberry.field(description="Target points per source point: '3/2' or '1.5'.")
    fee_percent: Decimal = Decimal(0)
    fee_points: int = 0
    min_points: int = 1
    max_points: int | None = None
    valid_from: datetime | None = strawberry.field(default=None, description="Default: now.")
    valid_until: datetime | None = None


@strawberry.type
class ExchangeRatePayload:
    rate: ExchangeRate | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ExchangePairInput:
    from_program_id: relay.GlobalID
    to_program_id: relay.GlobalID


@strawberry.input
class SetExchangeOptOutInput:
    from_program_id: relay.GlobalID
    to_program_id: relay.GlobalID
    opted_out: bool


@strawberry.type
class SetExchangeOptOutPayload:
    opted_out: bool | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ExchangeQuoteInput:
    from_membership_id: relay.GlobalID
    to_membership_id: relay.GlobalID
    points: int
    ttl_seconds: int = exchanges.QUOTE_TTL_SECONDS


@strawberry.type
class ExchangeQuotePayload:
    quote: ExchangeQuote | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="By quote (its rate and fee), or directly at the rate in force.")
class ExchangePointsInput:
    idempotency_key: str
    quote_id: relay.GlobalID | None = None
    from_membership_id: relay.GlobalID | None = None
    to_membership_id: relay.GlobalID | None = None
    points: int | None = None


@strawberry.type
class ExchangePointsPayload:
    exchange: Exchange | None = None
    from_entry_id: strawberry.Private[int | None] = None
    to_entry_id: strawberry.Private[int | None] = None
    from_balance: BigInt | None = None
    to_balance: BigInt | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @strawberry.field(description="The source membership's history entry (debit).")
    async def from_entry(self, info: Info) -> LedgerEntry | None:
        return None if self.from_entry_id is None else await _entry(info, self.from_entry_id)

    @strawberry.field(description="The target membership's history entry (credit).")
    async def to_entry(self, info: Info) -> LedgerEntry | None:
        return None if self.to_entry_id is None else await _entry(info, self.to_entry_id)


@strawberry.input
class SetPartnerAcceptanceInput:
    program_id: relay.GlobalID = strawberry.field(description="Another merchant's program.")
    accepts: bool
    min_points: int = 1
    max_points: int | None = None


@strawberry.type
class SetPartnerAcceptancePayload:
    accepts: bool | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RedeemAtPartnerInput:
    membership_id: relay.GlobalID
    merchant_id: relay.GlobalID = strawberry.field(description="Where the points are spent.")
    points: int
    reference: str = strawberry.field(description="The partner's bill or order number.")
    idempotency_key: str


@strawberry.type
class RedeemAtPartnerPayload:
    entry: LedgerEntry | None = None
    balance_after: BigInt | None = None
    value: Decimal | None = strawberry.field(
        default=None, description="What the program's merchant owes the partner for it."
    )
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ExchangeQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="The rates in force now, optionally touching one program.",
    )
    async def exchange_rates(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        program_id: relay.GlobalID | None = None,
    ) -> ExchangeRateConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await exchange_rates.rates_in_force(
            info.context.db,
            info.context.actor,
            first=first,
            after=after_key,
            program_id=None if program_id is None else node_pk(program_id, Program, "programId"),
        )
        return page_connection(
            ExchangeRateConnection, items, more, ExchangeRate.from_record, after=after_key
        )

    @strawberry.field(
        permission_classes=authenticated, description="Your exchanges, newest first (member)."
    )
    async def my_exchanges(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> ExchangeConnection:
        actor = info.context.actor
        args = page_args(first, after)
        if actor.member_id is None:
            return page_connection(
                ExchangeConnection, [], False, Exchange.from_record, after=args.after
            )
        return await connection_of(
            info.context.loaders.exchanges_of_member,
            actor.member_id,
            args,
            ExchangeConnection,
            Exchange.from_record,
            lambda r: r.id,
        )


@strawberry.type
class ExchangeMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Publish the next version of a pair's rate (operator); "
        "refused when it closes a cycle that returns more than it started.",
    )
    async def publish_exchange_rate(
        self, info: Info, input: PublishExchangeRateInput
    ) -> ExchangeRatePayload:
        async def run() -> ExchangeRatePayload:
            record = await exchange_rates.publish_rate(
                info.context.db,
                info.context.actor,
                from_program_id=node_pk(input.from_program_id, Program, "fromProgramId"),
                to_program_id=node_pk(input.to_program_id, Program, "toProgramId"),
                rate=input.rate,
                fee_percent=input.fee_percent,
                fee_points=input.fee_points,
                min_points=input.min_points,
                max_points=input.max_points,
                valid_from=input.valid_from,
                valid_until=input.valid_until,
            )
            return ExchangeRatePayload(rate=ExchangeRate.from_record(record))

        return await mutate(ExchangeRatePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Close a pair from now on (operator); history stays.",
    )
    async def withdraw_exchange_rate(
        self, info: Info, input: ExchangePairInput
    ) -> ExchangeRatePayload:
        async def run() -> ExchangeRatePayload:
            record = await exchange_rates.withdraw_rate(
                info.context.db,
                info.context.actor,
                from_program_id=node_pk(input.from_program_id, Program, "fromProgramId"),
                to_program_id=node_pk(input.to_program_id, Program, "toProgramId"),
            )
            return ExchangeRatePayload(rate=ExchangeRate.from_record(record))

        return await mutate(ExchangeRatePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Close or reopen exchanges between one of your programs "
        "and another (merchant).",
    )
    async def set_exchange_opt_out(
        self, info: Info, input: SetExchangeOptOutInput
    ) -> SetExchangeOptOutPayload:
        async def run() -> SetExchangeOptOutPayload:
            done = await exchange_rates.set_exchange_opt_out(
                info.context.db,
                info.context.actor,
                from_program_id=node_pk(input.from_program_id, Program, "fromProgramId"),
                to_program_id=node_pk(input.to_program_id, Program, "toProgramId"),
                opted_out=input.opted_out,
            )
            return SetExchangeOptOutPayload(opted_out=done)

        return await mutate(SetExchangeOptOutPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Lock the rate and fee of an exchange for a short time (member).",
    )
    async def exchange_quote(self, info: Info, input: ExchangeQuoteInput) -> ExchangeQuotePayload:
        async def run() -> ExchangeQuotePayload:
            record = await exchanges.quote_exchange(
                info.context.db,
                info.context.actor,
                from_membership_id=node_pk(
                    input.from_membership_id, Membership, "fromMembershipId"
                ),
                to_membership_id=node_pk(input.to_membership_id, Membership, "toMembershipId"),
                points=input.points,
                ttl_seconds=input.ttl_seconds,
            )
            return ExchangeQuotePayload(quote=ExchangeQuote.from_record(record))

        return await mutate(ExchangeQuotePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Exchange your points between two of your memberships (member). Idempotent.",
    )
    async def exchange_points(
        self, info: Info, input: ExchangePointsInput
    ) -> ExchangePointsPayload:
        async def run() -> ExchangePointsPayload:
            def pk(value: relay.GlobalID | None, field: str) -> int | None:
                return None if value is None else node_pk(value, Membership, field)

            done = await exchanges.exchange_points(
                info.context.db,
                info.context.actor,
                idempotency_key=input.idempotency_key,
                quote_id=None
                if input.quote_id is None
                else node_pk(input.quote_id, ExchangeQuote, "quoteId"),
                from_membership_id=pk(input.from_membership_id, "fromMembershipId"),
                to_membership_id=pk(input.to_membership_id, "toMembershipId"),
                points=input.points,
            )
            return ExchangePointsPayload(
                exchange=Exchange.from_record(done.exchange),
                from_entry_id=done.from_entry_id,
                to_entry_id=done.to_entry_id,
                from_balance=BigInt(done.from_balance),
                to_balance=BigInt(done.to_balance),
                replayed=done.replayed,
            )

        return await mutate(ExchangePointsPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Take (or stop taking) another merchant's program's "
        "points at your counters (merchant).",
    )
    async def set_partner_acceptance(
        self, info: Info, input: SetPartnerAcceptanceInput
    ) -> SetPartnerAcceptancePayload:
        async def run() -> SetPartnerAcceptancePayload:
            done = await exchanges.set_partner_acceptance(
                info.context.db,
                info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"),
                accepts=input.accepts,
                min_points=input.min_points,
                max_points=input.max_points,
            )
            return SetPartnerAcceptancePayload(accepts=done)

        return await mutate(SetPartnerAcceptancePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Spend your points of one program at a partner merchant (member). Idempotent.",
    )
    async def redeem_at_partner(
        self, info: Info, input: RedeemAtPartnerInput
    ) -> RedeemAtPartnerPayload:
        async def run() -> RedeemAtPartnerPayload:
            done = await exchanges.redeem_at_partner(
                info.context.db,
                info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                merchant_id=node_pk(input.merchant_id, Merchant, "merchantId"),
                points=input.points,
                reference=input.reference,
                idempotency_key=input.idempotency_key,
            )
            return RedeemAtPartnerPayload(
                entry=await _entry(info, done.movement.entry_id),
                balance_after=BigInt(done.movement.balance_after),
                value=done.value,
                replayed=done.movement.replayed,
            )

        return await mutate(RedeemAtPartnerPayload, run)
