"""Root mutations: parse the input, call one use case, build the payload.

Each takes one `input` and returns its payload with `userErrors`; every
points-moving mutation takes the client's `idempotencyKey`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.ledger.service import Movement, award_points, spend_points
from alliance.members.service import enroll_member, set_member_segments
from alliance.programs.models import ExpiryPolicy
from alliance.programs.service import create_merchant, create_program
from schema.adjustments import AdjustmentMutations
from schema.appeals import AppealMutations
from schema.context import Info
from schema.earning import EarningMutations
from schema.errors import UserError, mutate
from schema.exchange import ExchangeMutations
from schema.holds import HoldMutations
from schema.identity import IdentityMutations
from schema.permissions import IsAuthenticated
from schema.rewards import RewardMutations
from schema.rules import RuleMutations
from schema.scalars import BigInt
from schema.settlement import SettlementMutations
from schema.tiers import TierMutations
from schema.types import (
    LedgerEntry,
    Member,
    Membership,
    Merchant,
    Program,
    node_pk,
)
from schema.webhooks import WebhookMutations

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.input
class CreateMerchantInput:
    code: str = strawberry.field(description="Stable handle: lowercase letters, digits, dashes.")
    name: str


@strawberry.type
class CreateMerchantPayload:
    merchant: Merchant | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CreateProgramInput:
    merchant_id: relay.GlobalID
    code: str
    name: str
    unit_name: str
    point_value: Decimal = strawberry.field(description="Worth of one point, e.g. 0.01.")
    expiry_policy: ExpiryPolicy = ExpiryPolicy.NEVER
    expiry_value: int = 0
    pending_days: int = 0


@strawberry.type
class CreateProgramPayload:
    program: Program | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class EnrollMemberInput:
    program_id: relay.GlobalID
    member_number: str = strawberry.field(description="Your own number for the member.")
    display_name: str | None = None
    member_id: relay.GlobalID | None = strawberry.field(
        default=None, description="An existing member of yours, to enrol in another program."
    )


@strawberry.type
class EnrollMemberPayload:
    membership: Membership | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class MovePointsInput:
    membership_id: relay.GlobalID
    points: BigInt
    reason: str
    idempotency_key: str = strawberry.field(
        description="Your unique key for this request: a retry with the same key and input "
        "returns the first result; the same key with other input is refused."
    )


@strawberry.type
class MovePointsPayload:
    entry: LedgerEntry | None = strawberry.field(
        default=None, description="The movement on the member's account."
    )
    replayed: bool = strawberry.field(
        default=False, description="True when this is the stored result of an earlier request."
    )
    membership_id: strawberry.Private[int | None] = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @strawberry.field(description="The membership, as it is now.")
    async def membership(self, info: Info) -> Membership | None:
        if self.membership_id is None:
            return None
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)

    @classmethod
    def from_movement(cls, movement: Movement) -> MovePointsPayload:
        return cls(
            entry=LedgerEntry.from_movement(movement),
            replayed=movement.replayed,
            membership_id=movement.membership_id,
        )


@strawberry.input
class SetMemberSegmentsInput:
    membership_id: relay.GlobalID
    segments: list[str] = strawberry.field(description="Replaces the member's segments.")


@strawberry.type
class SetMemberSegmentsPayload:
    membership: Membership | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class Mutation(
    RuleMutations,
    EarningMutations,
    TierMutations,
    HoldMutations,
    ExchangeMutations,
    SettlementMutations,
    IdentityMutations,
    RewardMutations,
    AdjustmentMutations,
    AppealMutations,
    WebhookMutations,
):
    @strawberry.mutation(
        permission_classes=authenticated, description="Onboard a merchant (operator)."
    )
    async def create_merchant(
        self, info: Info, input: CreateMerchantInput
    ) -> CreateMerchantPayload:
        async def run() -> CreateMerchantPayload:
            merchant = await create_merchant(
                info.context.db, info.context.actor, code=input.code, name=input.name
            )
            return CreateMerchantPayload(merchant=Merchant.from_record(merchant))

        return await mutate(CreateMerchantPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Open a points program for a merchant (operator).",
    )
    async def create_program(self, info: Info, input: CreateProgramInput) -> CreateProgramPayload:
        async def run() -> CreateProgramPayload:
            program = await create_program(
                info.context.db,
                info.context.actor,
                merchant_id=node_pk(input.merchant_id, Merchant, "merchantId"),
                code=input.code,
                name=input.name,
                unit_name=input.unit_name,
                point_value=input.point_value,
                expiry_policy=input.expiry_policy,
                expiry_value=input.expiry_value,
                pending_days=input.pending_days,
            )
            return CreateProgramPayload(program=Program.from_record(program))

        return await mutate(CreateProgramPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Enrol a member in one of your programs (merchant).",
    )
    async def enroll_member(self, info: Info, input: EnrollMemberInput) -> EnrollMemberPayload:
        async def run() -> EnrollMemberPayload:
            membership = await enroll_member(
                info.context.db,
                info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"),
                member_number=input.member_number,
                display_name=input.display_name,
                member_id=None
                if input.member_id is None
                else node_pk(input.member_id, Member, "memberId"),
            )
            return EnrollMemberPayload(membership=Membership.from_record(membership))

        return await mutate(EnrollMemberPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Put a member of yours in segments, for promotion audiences (merchant).",
    )
    async def set_member_segments(
        self, info: Info, input: SetMemberSegmentsInput
    ) -> SetMemberSegmentsPayload:
        async def run() -> SetMemberSegmentsPayload:
            membership = await set_member_segments(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                segments=input.segments,
            )  # fmt: skip
            return SetMemberSegmentsPayload(membership=Membership.from_record(membership))

        return await mutate(SetMemberSegmentsPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Award points to a membership (merchant). Idempotent.",
    )
    async def award_points(self, info: Info, input: MovePointsInput) -> MovePointsPayload:
        return await _move_points(award_points, info, input)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Spend points (merchant at the counter, or the member). Idempotent.",
    )
    async def spend_points(self, info: Info, input: MovePointsInput) -> MovePointsPayload:
        return await _move_points(spend_points, info, input)


async def _move_points(
    use_case: Callable[..., Awaitable[Movement]], info: Info, input: MovePointsInput
) -> MovePointsPayload:
    async def run() -> MovePointsPayload:
        movement = await use_case(
            info.context.db,
            info.context.actor,
            membership_id=node_pk(input.membership_id, Membership, "membershipId"),
            points=input.points,
            reason=input.reason,
            idempotency_key=input.idempotency_key,
        )
        return MovePointsPayload.from_movement(movement)

    return await mutate(MovePointsPayload, run)
