"""GraphQL for appeals: the member's dispute of a transaction, its thread, its outcome."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.adjustments.models import AdjustmentDirection as Direction
from alliance.appeals import queries, service
from alliance.appeals.models import AppealReason as Reason
from alliance.appeals.models import AppealStatus as Status
from alliance.appeals.queries import AppealStatistics as StatisticsRecord
from alliance.appeals.queries import MessageView
from alliance.appeals.service import AppealView
from schema.adjustments import Adjustment, AdjustmentDirection
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import PageArgs, forget
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import (
    LedgerEntry,
    Membership,
    Merchant,
    connection_of,
    load_nodes,
    node_pk,
    page_connection,
)

authenticated: list[type[BasePermission]] = [IsAuthenticated]
AppealReason = strawberry.enum(Reason, name="AppealReason")
AppealStatus = strawberry.enum(Status, name="AppealStatus")


@strawberry.type(description="A message of an appeal's thread (never edited).")
class AppealMessage:
    id: strawberry.Private[int]
    author_role: str = strawberry.field(description="member or merchant.")
    author: str = strawberry.field(description="`member:<id>`, or the staff identity.")
    body: str
    created_at: datetime

    @classmethod
    def from_record(cls, r: MessageView) -> Self:
        return cls(id=r.id, author_role=r.author_role, author=r.author, body=r.body,
                   created_at=r.created_at)  # fmt: skip


@strawberry.type(name="AppealMessageConnection")
class AppealMessageConnection(relay.Connection[AppealMessage]):  # type: ignore[type-var]
    pass


@strawberry.type(
    description="A member's dispute of one transaction: open → in_review → resolved "
    "(an adjustment posted) or rejected (with a reason)."
)
class Appeal(relay.Node):
    id: relay.NodeID[int]
    merchant_id: strawberry.Private[int]
    membership_id: strawberry.Private[int]
    entry_id: strawberry.Private[int]
    adjustment_id: strawberry.Private[int | None]
    transaction_id: BigInt
    reason: AppealReason  # type: ignore[valid-type]
    text: str
    status: AppealStatus  # type: ignore[valid-type]
    respond_by: datetime = strawberry.field(description="SLA: staff answer by then.")
    resolve_by: datetime = strawberry.field(description="SLA: closed by then.")
    first_response_at: datetime | None
    closed_at: datetime | None
    resolution: str | None = strawberry.field(description="Why it was rejected, or the note "
                                              "of the adjustment that resolved it.")  # fmt: skip
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: AppealView) -> Self:
        return cls(
            id=r.id, merchant_id=r.merchant_id, membership_id=r.membership_id,
            entry_id=r.entry_id, adjustment_id=r.adjustment_id,
            transaction_id=BigInt(r.transaction_id), reason=Reason(r.reason), text=r.body,
            status=Status(r.status), respond_by=r.respond_by, resolve_by=r.resolve_by,
            first_response_at=r.first_response_at, closed_at=r.closed_at,
            resolution=r.resolution, created_at=r.created_at, updated_at=r.updated_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.appeal, node_ids, cls.from_record)

    @strawberry.field(description="The disputed entry of the member's history.")
    async def entry(self, info: Info) -> LedgerEntry | None:
        record = await info.context.loaders.entry.load(self.entry_id)
        return None if record is None else LedgerEntry.from_entry(record)

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant | None:
        record = await info.context.loaders.merchant.load(self.merchant_id)
        return None if record is None else Merchant.from_record(record)

    @strawberry.field(description="The latest adjustment proposed to resolve it "
                      "(merchant staff, operators and auditors).")  # fmt: skip
    async def adjustment(self, info: Info) -> Adjustment | None:
        if self.adjustment_id is None:
            return None
        record = await info.context.loaders.adjustment.load(self.adjustment_id)
        return None if record is None else Adjustment.from_record(record)

    @strawberry.field(description="The thread, oldest first; the member's text comes first.")
    async def messages(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> AppealMessageConnection:
        args = PageArgs(check_first(first), decode_cursor(after))
        return await connection_of(
            info.context.loaders.messages_of_appeal, self.id, args, AppealMessageConnection,
            AppealMessage.from_record, lambda m: m.id,
        )  # fmt: skip


@strawberry.type(name="AppealConnection")
class AppealConnection(relay.Connection[Appeal]):
    pass


@strawberry.type(description="One merchant's appeals, for the operator.")
class AppealStatistics:
    merchant_id: strawberry.Private[int]
    total: int
    open: int
    in_review: int
    resolved: int
    rejected: int
    response_overdue: int = strawberry.field(description="Answered late, or unanswered past "
                                             "respondBy.")  # fmt: skip
    resolution_overdue: int = strawberry.field(description="Closed late, or still open past "
                                               "resolveBy.")  # fmt: skip
    mean_response_seconds: float | None
    mean_resolution_seconds: float | None

    @classmethod
    def from_record(cls, r: StatisticsRecord) -> Self:
        return cls(
            merchant_id=r.merchant_id, total=r.total, open=r.open, in_review=r.in_review,
            resolved=r.resolved, rejected=r.rejected, response_overdue=r.response_overdue,
            resolution_overdue=r.resolution_overdue,
            mean_response_seconds=r.mean_response_seconds,
            mean_resolution_seconds=r.mean_resolution_seconds,
        )  # fmt: skip

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant | None:
        record = await info.context.loaders.merchant.load(self.merchant_id)
        return None if record is None else Merchant.from_record(record)


@strawberry.type(name="AppealStatisticsConnection")
class AppealStatisticsConnection(relay.Connection[AppealStatistics]):  # type: ignore[type-var]
    pass


@strawberry.input
class OpenAppealInput:
    entry_id: relay.GlobalID = strawberry.field(description="A LedgerEntry of your history.")
    reason: AppealReason  # type: ignore[valid-type]
    text: str


@strawberry.type
class AppealPayload:
    appeal: Appeal | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class PostAppealMessageInput:
    appeal_id: relay.GlobalID
    text: str


@strawberry.input
class ResolveAppealInput:
    appeal_id: relay.GlobalID
    direction: AdjustmentDirection  # type: ignore[valid-type]
    points: BigInt
    note: str
    idempotency_key: str


@strawberry.type
class ResolveAppealPayload:
    appeal: Appeal | None = None
    adjustment: Adjustment | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RejectAppealInput:
    appeal_id: relay.GlobalID
    reason: str


def _appeal(info: Info, view: AppealView) -> AppealPayload:
    forget(info.context.loaders.appeal, view.id)
    return AppealPayload(appeal=Appeal.from_record(view))


@strawberry.type
class AppealMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Dispute one entry of your history (member, in the merchant's app).",
    )
    async def open_appeal(self, info: Info, input: OpenAppealInput) -> AppealPayload:
        async def run() -> AppealPayload:
            view = await service.open_appeal(
                info.context.db, info.context.actor,
                entry_id=node_pk(input.entry_id, LedgerEntry, "entryId"),
                reason=Reason(input.reason), body=input.text,
            )  # fmt: skip
            return _appeal(info, view)

        return await mutate(AppealPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Write to an appeal's thread (its member, or the merchant's staff; the "
        "first staff message puts it in review).",
    )
    async def post_appeal_message(self, info: Info, input: PostAppealMessageInput) -> AppealPayload:
        async def run() -> AppealPayload:
            view = await service.post_appeal_message(
                info.context.db, info.context.actor,
                appeal_id=node_pk(input.appeal_id, Appeal, "appealId"), body=input.text,
            )  # fmt: skip
            return _appeal(info, view)

        return await mutate(AppealPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Resolve an appeal with an adjustment, through maker-checker (merchant "
        "staff). Idempotent.",
    )
    async def resolve_appeal(self, info: Info, input: ResolveAppealInput) -> ResolveAppealPayload:
        async def run() -> ResolveAppealPayload:
            done = await service.resolve_appeal(
                info.context.db, info.context.actor,
                appeal_id=node_pk(input.appeal_id, Appeal, "appealId"),
                direction=Direction(input.direction), points=input.points, note=input.note,
                idempotency_key=input.idempotency_key,
            )  # fmt: skip
            forget(info.context.loaders.appeal, done.appeal.id)
            forget(info.context.loaders.adjustment, done.adjustment.id)
            return ResolveAppealPayload(
                appeal=Appeal.from_record(done.appeal),
                adjustment=Adjustment.from_record(done.adjustment),
                replayed=done.adjustment.replayed,
            )

        return await mutate(ResolveAppealPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Refuse an appeal, saying why (merchant staff).",
    )
    async def reject_appeal(self, info: Info, input: RejectAppealInput) -> AppealPayload:
        async def run() -> AppealPayload:
            view = await service.reject_appeal(
                info.context.db, info.context.actor,
                appeal_id=node_pk(input.appeal_id, Appeal, "appealId"), reason=input.reason,
            )  # fmt: skip
            return _appeal(info, view)

        return await mutate(AppealPayload, run)


@strawberry.type
class AppealQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="Appeals, newest first: a member's own, a merchant's staff their "
        "merchant's, operators and auditors all.",
    )
    async def appeals(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        status: AppealStatus | None = None,  # type: ignore[valid-type]
    ) -> AppealConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await queries.appeals_page(
            info.context.db, info.context.actor, first=first, after=after_key,
            status=None if status is None else Status(status),
        )  # fmt: skip
        return page_connection(AppealConnection, items, more, Appeal.from_record, after=after_key)

    @strawberry.field(
        permission_classes=authenticated,
        description="Appeal counts, SLA misses and mean times per merchant (operator, auditor).",
    )
    async def appeal_statistics(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> AppealStatisticsConnection:
        first, after_key = check_first(first), decode_cursor(after)
        rows = await queries.appeal_statistics(info.context.db, info.context.actor)
        rest = [r for r in rows if after_key is None or r.merchant_id > after_key]
        return page_connection(
            AppealStatisticsConnection, rest[:first], len(rest) > first,
            AppealStatistics.from_record, after=after_key, key=lambda r: r.merchant_id,
        )  # fmt: skip
