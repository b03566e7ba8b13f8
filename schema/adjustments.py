"""GraphQL for manual adjustments with maker-checker approval."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.adjustments import queries, service
from alliance.adjustments.models import AdjustmentDirection as Direction
from alliance.adjustments.models import AdjustmentReason as Reason
from alliance.adjustments.models import AdjustmentStatus as Status
from alliance.adjustments.service import AdjustmentView
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import forget
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import Membership, Program, load_nodes, node_pk, page_connection

authenticated: list[type[BasePermission]] = [IsAuthenticated]
AdjustmentDirection = strawberry.enum(Direction, name="AdjustmentDirection")
AdjustmentReason = strawberry.enum(Reason, name="AdjustmentReason")
AdjustmentStatus = strawberry.enum(Status, name="AdjustmentStatus")


@strawberry.type(
    description="A manual credit or debit of a membership by merchant staff. At or above "
    "the program's approval threshold it waits for another staff identity."
)
class Adjustment(relay.Node):
    id: relay.NodeID[int]
    membership_id: strawberry.Private[int]
    program_id: strawberry.Private[int]
    direction: AdjustmentDirection  # type: ignore[valid-type]
    points: BigInt
    reason_code: AdjustmentReason  # type: ignore[valid-type]
    note: str
    status: AdjustmentStatus  # type: ignore[valid-type]
    requested_by: str = strawberry.field(description="The maker's staff identity (its client).")
    needs_approval: bool
    expires_at: datetime | None = strawberry.field(
        description="A pending request not decided by then expires."
    )
    decided_by: str | None = strawberry.field(description="The checker's staff identity.")
    decision_note: str | None = strawberry.field(description="A rejection's reason.")
    decided_at: datetime | None
    transaction_id: BigInt | None = strawberry.field(description="The ledger transaction, "
                                                     "once posted.")  # fmt: skip
    created_at: datetime

    @classmethod
    def from_record(cls, r: AdjustmentView) -> Self:
        return cls(
            id=r.id, membership_id=r.membership_id, program_id=r.program_id,
            direction=Direction(r.direction), points=BigInt(r.points),
            reason_code=Reason(r.reason_code), note=r.note, status=Status(r.status),
            requested_by=r.requested_by, needs_approval=r.needs_approval,
            expires_at=r.expires_at, decided_by=r.decided_by, decision_note=r.decision_note,
            decided_at=r.decided_at,
            transaction_id=None if r.transaction_id is None else BigInt(r.transaction_id),
            created_at=r.created_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.adjustment, node_ids, cls.from_record)

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)

    @strawberry.field
    async def program(self, info: Info) -> Program | None:
        record = await info.context.loaders.program.load(self.program_id)
        return None if record is None else Program.from_record(record)


@strawberry.type(name="AdjustmentConnection")
class AdjustmentConnection(relay.Connection[Adjustment]):
    pass


@strawberry.input
class SetAdjustmentPolicyInput:
    program_id: relay.GlobalID
    approval_threshold: BigInt | None = strawberry.field(
        description="Adjustments of this many points or more need a second staff identity; "
        "null: every adjustment does (the default)."
    )


@strawberry.type
class SetAdjustmentPolicyPayload:
    approval_threshold: BigInt | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RequestAdjustmentInput:
    membership_id: relay.GlobalID
    direction: AdjustmentDirection  # type: ignore[valid-type]
    points: BigInt
    reason_code: AdjustmentReason  # type: ignore[valid-type]
    note: str
    idempotency_key: str


@strawberry.type
class AdjustmentPayload:
    adjustment: Adjustment | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ApproveAdjustmentInput:
    adjustment_id: relay.GlobalID
    note: str | None = None


@strawberry.input
class RejectAdjustmentInput:
    adjustment_id: relay.GlobalID
    reason: str


def _payload(info: Info, view: AdjustmentView) -> AdjustmentPayload:
    forget(info.context.loaders.adjustment, view.id)
    forget(info.context.loaders.membership, view.membership_id)
    return AdjustmentPayload(adjustment=Adjustment.from_record(view), replayed=view.replayed)


@strawberry.type
class AdjustmentMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="The points at which adjustments need a second staff identity (merchant).",
    )
    async def set_adjustment_policy(
        self, info: Info, input: SetAdjustmentPolicyInput
    ) -> SetAdjustmentPolicyPayload:
        async def run() -> SetAdjustmentPolicyPayload:
            threshold = await service.set_adjustment_policy(
                info.context.db, info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"),
                approval_threshold=input.approval_threshold,
            )  # fmt: skip
            return SetAdjustmentPolicyPayload(
                approval_threshold=None if threshold is None else BigInt(threshold)
            )

        return await mutate(SetAdjustmentPolicyPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Credit or debit a membership by hand (merchant staff). Below the "
        "program's threshold it posts at once; otherwise it waits for another staff "
        "identity. Idempotent.",
    )
    async def request_adjustment(
        self, info: Info, input: RequestAdjustmentInput
    ) -> AdjustmentPayload:
        async def run() -> AdjustmentPayload:
            view = await service.request_adjustment(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                direction=Direction(input.direction), points=input.points,
                reason_code=Reason(input.reason_code), note=input.note,
                idempotency_key=input.idempotency_key,
            )  # fmt: skip
            return _payload(info, view)

        return await mutate(AdjustmentPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Post a pending adjustment (another staff identity of the merchant).",
    )
    async def approve_adjustment(
        self, info: Info, input: ApproveAdjustmentInput
    ) -> AdjustmentPayload:
        async def run() -> AdjustmentPayload:
            view = await service.approve_adjustment(
                info.context.db, info.context.actor,
                adjustment_id=node_pk(input.adjustment_id, Adjustment, "adjustmentId"),
                note=input.note,
            )  # fmt: skip
            return _payload(info, view)

        return await mutate(AdjustmentPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Refuse a pending adjustment, saying why (another staff identity).",
    )
    async def reject_adjustment(
        self, info: Info, input: RejectAdjustmentInput
    ) -> AdjustmentPayload:
        async def run() -> AdjustmentPayload:
            view = await service.reject_adjustment(
                info.context.db, info.context.actor,
                adjustment_id=node_pk(input.adjustment_id, Adjustment, "adjustmentId"),
                reason=input.reason,
            )  # fmt: skip
            return _payload(info, view)

        return await mutate(AdjustmentPayload, run)


@strawberry.type
class AdjustmentQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="Adjustment requests, newest first (merchant staff: their merchant's; "
        "operators and auditors: all).",
    )
    async def adjustments(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        status: AdjustmentStatus | None = None,  # type: ignore[valid-type]
        membership_id: relay.GlobalID | None = None,
    ) -> AdjustmentConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await queries.adjustments_page(
            info.context.db, info.context.actor, first=first, after=after_key,
            status=None if status is None else Status(status),
            membership_id=None if membership_id is None
            else node_pk(membership_id, Membership, "membershipId"),
        )  # fmt: skip
        return page_connection(
            AdjustmentConnection, items, more, Adjustment.from_record, after=after_key
        )
