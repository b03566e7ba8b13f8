"""GraphQL for earning beyond purchases: actions, refunds, and the program's caps."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.ledger.reversal import reverse_purchase
from alliance.rules import earning
from alliance.rules import service as rules
from alliance.rules.earning import EarnResult
from alliance.rules.engine import Action
from alliance.rules.service import ClawbackPolicy
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import forget
from schema.permissions import IsAuthenticated
from schema.rules import EarnBreakdown
from schema.scalars import BigInt
from schema.types import CapInput, LedgerEntry, Membership, Program, node_pk

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="What a member earned: the entry posted, and why.")
class Earned:
    entry: LedgerEntry | None = strawberry.field(
        description="Null when nothing was posted (caps left nothing, or the rule gives 0)."
    )
    breakdown: EarnBreakdown
    replayed: bool

    @classmethod
    def from_result(cls, result: EarnResult) -> Earned:
        movement = result.movement
        return cls(
            entry=None if movement is None else LedgerEntry.from_movement(movement),
            breakdown=EarnBreakdown.from_breakdown(result.breakdown),
            replayed=bool(movement and movement.replayed),
        )


@strawberry.input
class RecordActionInput:
    membership_id: relay.GlobalID = strawberry.field(
        description="Who did it (for a referral: the member who was referred)."
    )
    action: Action
    idempotency_key: str
    custom_action: str | None = strawberry.field(default=None, description="CUSTOM actions.")
    reference: str | None = strawberry.field(
        default=None, description="What the action was about (survey id, shared item)."
    )
    referrer_membership_id: relay.GlobalID | None = strawberry.field(
        default=None, description="REFERRAL: the member who referred."
    )
    occurred_at: datetime | None = strawberry.field(default=None, description="Default: now.")


@strawberry.type
class RecordActionPayload:
    earned: Earned | None = None
    referrer: Earned | None = strawberry.field(
        default=None, description="REFERRAL: what the referrer earned."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ReversePurchaseInput:
    order_id: str
    refund_id: str = strawberry.field(
        description="Your refund number: sending the same refund again changes nothing."
    )
    amount: Decimal = strawberry.field(description="The amount refunded this time.")
    currency: str = "CNY"


@strawberry.type(description="What a refund took back.")
class Reversal:
    refunded: Decimal
    clawback: BigInt = strawberry.field(description="Points taken back: taken + debt + writtenOff.")
    taken: BigInt = strawberry.field(description="From the member's balance.")
    debt: BigInt = strawberry.field(description="Added to the member's clawback debt.")
    written_off: BigInt = strawberry.field(description="Absorbed by the program.")
    clawback_debt_after: BigInt
    entry: LedgerEntry | None = strawberry.field(
        description="The member's history entry, when points left the balance."
    )
    membership: Membership | None
    replayed: bool


@strawberry.type
class ReversePurchasePayload:
    reversal: Reversal | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetEarningPolicyInput:
    program_id: relay.GlobalID
    caps: list[CapInput] | None = strawberry.field(
        default=None, description="Caps on all rule-based earning; [] removes them."
    )
    clawback_policy: ClawbackPolicy | None = None


@strawberry.type
class SetEarningPolicyPayload:
    program: Program | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class EarningMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Reward an action by your program's rule for it (merchant). Idempotent; "
        "once-only and per-period actions are refused with ALREADY_REWARDED when repeated.",
    )
    async def record_action(self, info: Info, input: RecordActionInput) -> RecordActionPayload:
        async def run() -> RecordActionPayload:
            referrer = input.referrer_membership_id
            result = await earning.record_action(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                action=input.action, idempotency_key=input.idempotency_key,
                custom_action=input.custom_action, reference=input.reference,
                referrer_membership_id=None if referrer is None
                else node_pk(referrer, Membership, "referrerMembershipId"),
                occurred_at=input.occurred_at,
            )  # fmt: skip
            return RecordActionPayload(
                earned=Earned.from_result(result.earned),
                referrer=None if result.referrer is None else Earned.from_result(result.referrer),
            )

        return await mutate(RecordActionPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Claw back the points of a refunded purchase, fully or in part (merchant). "
        "Idempotent per refund id.",
    )
    async def reverse_purchase(
        self, info: Info, input: ReversePurchaseInput
    ) -> ReversePurchasePayload:
        async def run() -> ReversePurchasePayload:
            done = await reverse_purchase(
                info.context.db, info.context.actor, order_id=input.order_id,
                refund_id=input.refund_id, amount=input.amount, currency=input.currency,
            )  # fmt: skip
            loaders = info.context.loaders
            entry = None if done.entry_id is None else await loaders.entry.load(done.entry_id)
            membership = await loaders.membership.load(done.membership_id)
            return ReversePurchasePayload(reversal=Reversal(
                refunded=done.refunded, clawback=BigInt(done.clawback),
                taken=BigInt(done.taken), debt=BigInt(done.debt),
                written_off=BigInt(done.written_off),
                clawback_debt_after=BigInt(done.debt_after),
                entry=None if entry is None else LedgerEntry.from_entry(entry),
                membership=None if membership is None else Membership.from_record(membership),
                replayed=done.replayed,
            ))  # fmt: skip

        return await mutate(ReversePurchasePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Your program's earning caps and refund clawback policy (merchant).",
    )
    async def set_earning_policy(
        self, info: Info, input: SetEarningPolicyInput
    ) -> SetEarningPolicyPayload:
        async def run() -> SetEarningPolicyPayload:
            program_id = node_pk(input.program_id, Program, "programId")
            await rules.set_earning_policy(
                info.context.db, info.context.actor, program_id=program_id,
                caps=None if input.caps is None else [cap.to_domain() for cap in input.caps],
                clawback_policy=input.clawback_policy,
            )  # fmt: skip
            forget(info.context.loaders.program, program_id)
            record = await info.context.loaders.program.load(program_id)
            return SetEarningPolicyPayload(
                program=None if record is None else Program.from_record(record)
            )

        return await mutate(SetEarningPolicyPayload, run)
