"""GraphQL for two-phase holds at the counter: authorize a points discount on a bill,
capture it (possibly less) when the bill is paid, or void it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.ledger import holds
from alliance.ledger.holds import HoldRecord
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import forget
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import LedgerEntry, Membership, Program, load_nodes, node_pk

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="Points reserved on a member account until captured or released.")
class Hold(relay.Node):
    id: relay.NodeID[int]
    membership_id: strawberry.Private[int]
    kind: str = strawberry.field(description="discount or reward.")
    points: BigInt = strawberry.field(description="Points reserved.")
    captured: BigInt | None = strawberry.field(description="Points spent by the capture.")
    status: str = strawberry.field(description="authorized, captured, voided or expired.")
    expires_at: datetime = strawberry.field(description="An authorization not captured by "
                                            "then is released.")  # fmt: skip
    reason: str
    created_at: datetime
    closed_at: datetime | None

    @classmethod
    def from_record(cls, r: HoldRecord) -> Self:
        return cls(
            id=r.id, membership_id=r.membership_id, kind=r.kind, points=BigInt(r.points),
            captured=None if r.captured is None else BigInt(r.captured), status=r.status,
            expires_at=r.expires_at, reason=r.reason, created_at=r.created_at,
            closed_at=r.closed_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.hold, node_ids, cls.from_record)

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)


@strawberry.input
class AuthorizeDiscountInput:
    membership_id: relay.GlobalID
    points: int
    bill_amount: Decimal = strawberry.field(
        description="The bill the points go against: their worth may not exceed it."
    )
    idempotency_key: str
    reason: str = "counter discount"
    ttl_seconds: int = strawberry.field(
        default=holds.DEFAULT_TTL_SECONDS, description="Until the authorization lapses."
    )


@strawberry.type
class AuthorizeDiscountPayload:
    hold: Hold | None = None
    money_off: Decimal | None = strawberry.field(
        default=None, description="What the points are worth on the bill (program's rate)."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CaptureDiscountInput:
    hold_id: relay.GlobalID
    points: int | None = strawberry.field(
        default=None, description="At most the points held (default: all of them)."
    )


@strawberry.type
class CaptureDiscountPayload:
    hold: Hold | None = None
    entry: LedgerEntry | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class VoidDiscountInput:
    hold_id: relay.GlobalID


@strawberry.type
class VoidDiscountPayload:
    hold: Hold | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _reload(info: Info, hold_id: int) -> Hold | None:
    forget(info.context.loaders.hold, hold_id)
    record = await info.context.loaders.hold.load(hold_id)
    return None if record is None else Hold.from_record(record)


@strawberry.input
class RefundDiscountInput:
    hold_id: relay.GlobalID
    points: int = strawberry.field(description="Points to give back (in all, at most the capture).")
    refund_id: str = strawberry.field(description="Your refund number: sent again, it changes "
                                      "nothing.")  # fmt: skip


@strawberry.type
class RefundDiscountPayload:
    entry: LedgerEntry | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetDiscountPolicyInput:
    program_id: relay.GlobalID
    max_share: Decimal = strawberry.field(description="Of a bill, at most (0.5: half).")
    min_points: int = 1


@strawberry.type
class SetDiscountPolicyPayload:
    program: Program | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class HoldMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="How much of a bill points may pay at your counters (merchant).",
    )
    async def set_discount_policy(
        self, info: Info, input: SetDiscountPolicyInput
    ) -> SetDiscountPolicyPayload:
        async def run() -> SetDiscountPolicyPayload:
            program_id = node_pk(input.program_id, Program, "programId")
            await holds.set_discount_policy(
                info.context.db, info.context.actor, program_id=program_id,
                max_share=input.max_share, min_points=input.min_points,
            )  # fmt: skip
            forget(info.context.loaders.program, program_id)
            record = await info.context.loaders.program.load(program_id)
            return SetDiscountPolicyPayload(
                program=None if record is None else Program.from_record(record)
            )

        return await mutate(SetDiscountPolicyPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Reserve points against a bill at the counter (merchant, or the member in "
        "its app). Idempotent.",
    )
    async def authorize_discount(
        self, info: Info, input: AuthorizeDiscountInput
    ) -> AuthorizeDiscountPayload:
        async def run() -> AuthorizeDiscountPayload:
            membership_id = node_pk(input.membership_id, Membership, "membershipId")
            done = await holds.authorize_discount(
                info.context.db, info.context.actor, membership_id=membership_id,
                points=input.points, bill_amount=input.bill_amount, reason=input.reason,
                idempotency_key=input.idempotency_key, ttl_seconds=input.ttl_seconds,
            )  # fmt: skip
            return AuthorizeDiscountPayload(hold=Hold.from_record(done.hold),
                                            money_off=done.money_off)  # fmt: skip

        return await mutate(AuthorizeDiscountPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Spend the held points when the bill is paid (merchant). Idempotent.",
    )
    async def capture_discount(
        self, info: Info, input: CaptureDiscountInput
    ) -> CaptureDiscountPayload:
        async def run() -> CaptureDiscountPayload:
            hold_id = node_pk(input.hold_id, Hold, "holdId")
            done = await holds.capture_hold(info.context.db, info.context.actor,
                                            hold_id=hold_id, points=input.points)  # fmt: skip
            entry = await info.context.loaders.entry.load(done.entry_id)
            return CaptureDiscountPayload(
                hold=await _reload(info, hold_id),
                entry=None if entry is None else LedgerEntry.from_entry(entry),
                replayed=done.replayed,
            )

        return await mutate(CaptureDiscountPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Give back points of a paid discount whose bill was refunded (merchant). "
        "Idempotent per refund id.",
    )
    async def refund_discount(
        self, info: Info, input: RefundDiscountInput
    ) -> RefundDiscountPayload:
        async def run() -> RefundDiscountPayload:
            done = await holds.refund_hold(
                info.context.db, info.context.actor,
                hold_id=node_pk(input.hold_id, Hold, "holdId"), points=input.points,
                refund_id=input.refund_id,
            )  # fmt: skip
            entry = await info.context.loaders.entry.load(done.entry_id)
            return RefundDiscountPayload(
                entry=None if entry is None else LedgerEntry.from_entry(entry),
                replayed=done.replayed,
            )

        return await mutate(RefundDiscountPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Release the held points (merchant, or the member). Idempotent.",
    )
    async def void_discount(self, info: Info, input: VoidDiscountInput) -> VoidDiscountPayload:
        async def run() -> VoidDiscountPayload:
            hold_id = node_pk(input.hold_id, Hold, "holdId")
            await holds.void_hold(info.context.db, info.context.actor, hold_id=hold_id)
            return VoidDiscountPayload(hold=await _reload(info, hold_id))

        return await mutate(VoidDiscountPayload, run)
