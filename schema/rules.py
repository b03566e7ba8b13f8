"""GraphQL for earning rules: managing them, previewing and recording purchases."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.rules import earning
from alliance.rules import service as rules
from alliance.rules.engine import (
    Action,
    Breakdown,
    Contribution,
    Frequency,
    OrderLine,
    Purchase,
    Rounding,
    Stacking,
)
from alliance.rules.models import RuleKind
from alliance.rules.service import RuleRecord
from alliance.rules.terms import ConditionsInput, TermsInput
from schema.context import Info
from schema.errors import UserError, mutate
from schema.loaders import forget
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import (
    CapInput,
    EarnCap,
    LedgerEntry,
    Membership,
    Program,
    load_nodes,
    node_pk,
)

strawberry.enum(RuleKind, name="RuleKind")
strawberry.enum(Rounding, name="Rounding")
strawberry.enum(Stacking, name="PromotionStacking")
strawberry.enum(Action, name="EarnAction")
strawberry.enum(Frequency, name="ActionFrequency")

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="When a rule applies. Null lists mean no restriction.")
class RuleConditions:
    minimum_amount: Decimal
    channels: list[str] | None
    categories: list[str] | None
    excluded_categories: list[str]
    weekdays: list[int] | None = strawberry.field(description="ISO days, 1 Monday … 7 Sunday.")
    tiers: list[str] | None = strawberry.field(description="Audience: members in these tiers.")
    segments: list[str] | None = strawberry.field(
        description="Audience: members in any of these segments."
    )


@strawberry.type(description="What a rule version gives.")
class RuleTerms:
    points_per_unit: Decimal | None = strawberry.field(
        description="Purchase rules: points per currency unit."
    )
    rounding: Rounding | None
    multiplier: Decimal | None = strawberry.field(description="Promotions: ×factor.")
    bonus_points: int = strawberry.field(description="Promotions: fixed points added.")
    conditions: RuleConditions | None = strawberry.field(
        description="Purchase rules and promotions: when they apply."
    )
    caps: list[EarnCap] = strawberry.field(description="Per member caps on this rule's points.")
    action: Action | None = strawberry.field(description="Action rules: the action rewarded.")
    custom_action: str | None
    points: int = strawberry.field(description="Action rules: points for the member.")
    referee_points: int = strawberry.field(description="Referrals: points for the referee.")
    frequency: Frequency | None = strawberry.field(description="Action rules: how often.")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        c = params.get("conditions")
        return cls(
            points_per_unit=_decimal(params.get("points_per_unit")),
            rounding=Rounding(params["rounding"]) if params.get("rounding") else None,
            multiplier=_decimal(params.get("multiplier")),
            bonus_points=int(params.get("bonus_points") or 0),
            caps=EarnCap.from_stored(params.get("caps")),
            action=Action(params["action"]) if params.get("action") else None,
            custom_action=params.get("custom_action"),
            points=int(params.get("points") or 0),
            referee_points=int(params.get("referee_points") or 0),
            frequency=Frequency(params["frequency"]) if params.get("frequency") else None,
            conditions=None
            if c is None
            else RuleConditions(
                minimum_amount=Decimal(c["minimum_amount"]),
                channels=c.get("channels"),
                categories=c.get("categories"),
                excluded_categories=c.get("excluded_categories") or [],
                weekdays=c.get("weekdays"),
                tiers=c.get("tiers"),
                segments=c.get("segments"),
            ),
        )


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


@strawberry.type(description="One version of an earning rule. Versions are never edited.")
class EarningRule(relay.Node):
    id: relay.NodeID[int]
    program_id: strawberry.Private[int]
    code: str
    version: int
    kind: RuleKind
    name: str
    priority: int
    status: str
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime
    terms: RuleTerms

    @classmethod
    def from_record(cls, r: RuleRecord) -> Self:
        return cls(
            id=r.id, program_id=r.program_id, code=r.code, version=r.version,
            kind=RuleKind(r.kind), name=r.name, priority=r.priority, status=r.status,
            valid_from=r.valid_from, valid_until=r.valid_until, created_at=r.created_at,
            terms=RuleTerms.from_params(r.params),
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.rule, node_ids, cls.from_record)


@strawberry.type(name="EarningRuleConnection")
class EarningRuleConnection(relay.Connection[EarningRule]):
    pass


@strawberry.type(description="One contribution to an earn: which rule version gave what.")
class EarnLine:
    rule_id: strawberry.Private[int | None]
    code: str = strawberry.field(description="The rule's code, or `program` for a program cap.")
    version: int | None
    name: str
    kind: str = strawberry.field(
        description="purchase, multiplier, bonus, action, or cap (negative: what a cap cut)."
    )
    points: BigInt
    detail: str

    @classmethod
    def from_contribution(cls, c: Contribution) -> Self:
        return cls(rule_id=c.rule_id, code=c.code, version=c.version, name=c.name,
                   kind=c.kind, points=BigInt(c.points), detail=c.detail)  # fmt: skip

    @strawberry.field
    async def rule(self, info: Info) -> EarningRule | None:
        if self.rule_id is None:
            return None
        record = await info.context.loaders.rule.load(self.rule_id)
        return None if record is None else EarningRule.from_record(record)


@strawberry.type(description="Why a purchase earns what it earns.")
class EarnBreakdown:
    points: BigInt
    breakdown: strawberry.Private[Breakdown]

    @classmethod
    def from_breakdown(cls, b: Breakdown) -> Self:
        return cls(points=BigInt(b.points), breakdown=b)

    @strawberry.field(description="Every contribution, cap cuts included; they add up to points.")
    def lines(self) -> list[EarnLine]:
        return [EarnLine.from_contribution(c) for c in self.breakdown.contributions]


@strawberry.input
class RuleConditionsInput:
    minimum_amount: Decimal = Decimal(0)
    channels: list[str] | None = None
    categories: list[str] | None = None
    excluded_categories: list[str] = strawberry.field(default_factory=list)
    weekdays: list[int] | None = None
    tiers: list[str] | None = strawberry.field(
        default=None, description="Audience: members in these tiers (codes)."
    )
    segments: list[str] | None = strawberry.field(
        default=None, description="Audience: members in any of these segments."
    )


@strawberry.input
class RuleTermsInput:
    points_per_unit: Decimal | None = None
    rounding: Rounding = Rounding.FLOOR
    multiplier: Decimal | None = None
    bonus_points: int = 0
    conditions: RuleConditionsInput | None = None
    caps: list[CapInput] = strawberry.field(
        default_factory=list, description="Per member caps on this rule's points."
    )
    action: Action | None = strawberry.field(default=None, description="Action rules.")
    custom_action: str | None = strawberry.field(default=None, description="CUSTOM actions.")
    points: int = strawberry.field(default=0, description="Action rules: points given.")
    referee_points: int = strawberry.field(default=0, description="Referrals: for the referee.")
    frequency: Frequency | None = strawberry.field(
        default=None,
        description="Action rules: how often (default: fixed by the action, else every time).",
    )

    def to_domain(self) -> TermsInput:
        c = self.conditions or RuleConditionsInput()
        return TermsInput(
            points_per_unit=self.points_per_unit, rounding=self.rounding,
            multiplier=self.multiplier, bonus_points=self.bonus_points,
            caps=[cap.to_domain() for cap in self.caps], action=self.action,
            custom_action=self.custom_action, points=self.points,
            referee_points=self.referee_points, frequency=self.frequency,
            conditions=ConditionsInput(
                minimum_amount=c.minimum_amount, channels=c.channels, categories=c.categories,
                excluded_categories=c.excluded_categories, weekdays=c.weekdays,
                tiers=c.tiers, segments=c.segments,
            ),
        )  # fmt: skip


@strawberry.input
class CreateEarningRuleInput:
    program_id: relay.GlobalID
    code: str
    kind: RuleKind
    name: str
    terms: RuleTermsInput
    priority: int = 0
    valid_from: datetime | None = strawberry.field(
        default=None, description="When it takes effect (default: in 5 seconds)."
    )
    valid_until: datetime | None = None


@strawberry.input
class ReviseEarningRuleInput:
    rule_id: relay.GlobalID = strawberry.field(description="Any version of the rule.")
    name: str | None = None
    terms: RuleTermsInput | None = None
    priority: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    disable: bool = False


@strawberry.type
class EarningRulePayload:
    rule: EarningRule | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetPromotionStackingInput:
    program_id: relay.GlobalID
    stacking: Stacking


@strawberry.type
class SetPromotionStackingPayload:
    program: Program | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class OrderLineInput:
    sku: str
    amount: Decimal
    category: str | None = None


@strawberry.input
class PurchaseInput:
    membership_id: relay.GlobalID
    amount: Decimal
    currency: str = "CNY"
    channel: str | None = None
    occurred_at: datetime | None = strawberry.field(default=None, description="Default: now.")
    lines: list[OrderLineInput] = strawberry.field(default_factory=list)

    def to_domain(self) -> Purchase:
        return Purchase(
            amount=self.amount,
            occurred_at=self.occurred_at or datetime.now(UTC),
            channel=self.channel,
            lines=tuple(OrderLine(line.sku, line.amount, line.category) for line in self.lines),
        )


@strawberry.input
class RecordPurchaseInput(PurchaseInput):
    order_id: str = strawberry.field(
        description="Your order number: recording the same order again earns once."
    )


@strawberry.type
class RecordPurchasePayload:
    entry: LedgerEntry | None = strawberry.field(
        default=None, description="The points posted; null when the purchase earns nothing."
    )
    breakdown: EarnBreakdown | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RuleQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="What a purchase would earn now, by the rules in force; nothing is posted.",
    )
    async def preview_earn(self, info: Info, input: PurchaseInput) -> EarnBreakdown:
        breakdown = await earning.preview_earn(
            info.context.db, info.context.actor,
            membership_id=node_pk(input.membership_id, Membership, "membershipId"),
            purchase=input.to_domain(), currency=input.currency,
        )  # fmt: skip
        return EarnBreakdown.from_breakdown(breakdown)


@strawberry.type
class RuleMutations:
    @strawberry.mutation(permission_classes=authenticated,
                         description="A new earning rule in one of your programs.")  # fmt: skip
    async def create_earning_rule(
        self, info: Info, input: CreateEarningRuleInput
    ) -> EarningRulePayload:
        async def run() -> EarningRulePayload:
            record = await rules.create_rule(
                info.context.db, info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"),
                code=input.code, kind=input.kind, name=input.name,
                terms=input.terms.to_domain(), priority=input.priority,
                valid_from=input.valid_from, valid_until=input.valid_until,
            )  # fmt: skip
            return EarningRulePayload(rule=EarningRule.from_record(record))

        return await mutate(EarningRulePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="A new version of a rule (or its disabling), taking effect at validFrom; "
        "earlier versions stay as they were.",
    )
    async def revise_earning_rule(
        self, info: Info, input: ReviseEarningRuleInput
    ) -> EarningRulePayload:
        async def run() -> EarningRulePayload:
            record = await rules.revise_rule(
                info.context.db, info.context.actor,
                rule_id=node_pk(input.rule_id, EarningRule, "ruleId"),
                name=input.name, terms=None if input.terms is None else input.terms.to_domain(),
                priority=input.priority, valid_from=input.valid_from,
                valid_until=input.valid_until, disable=input.disable,
            )  # fmt: skip
            return EarningRulePayload(rule=EarningRule.from_record(record))

        return await mutate(EarningRulePayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="How your program's promotion multipliers combine.",
    )
    async def set_promotion_stacking(
        self, info: Info, input: SetPromotionStackingInput
    ) -> SetPromotionStackingPayload:
        async def run() -> SetPromotionStackingPayload:
            program_id = node_pk(input.program_id, Program, "programId")
            await rules.set_promotion_stacking(
                info.context.db, info.context.actor, program_id=program_id,
                stacking=input.stacking,
            )  # fmt: skip
            forget(info.context.loaders.program, program_id)
            record = await info.context.loaders.program.load(program_id)
            return SetPromotionStackingPayload(
                program=None if record is None else Program.from_record(record)
            )

        return await mutate(SetPromotionStackingPayload, run)

    @strawberry.mutation(permission_classes=authenticated,
                         description="Earn on a purchase by the rules in force when it "
                         "happened. Idempotent per order id.")  # fmt: skip
    async def record_purchase(
        self, info: Info, input: RecordPurchaseInput
    ) -> RecordPurchasePayload:
        async def run() -> RecordPurchasePayload:
            result = await earning.record_purchase(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                order_id=input.order_id, purchase=input.to_domain(), currency=input.currency,
            )  # fmt: skip
            movement = result.movement
            return RecordPurchasePayload(
                entry=None if movement is None else LedgerEntry.from_movement(movement),
                breakdown=EarnBreakdown.from_breakdown(result.breakdown),
                replayed=bool(movement and movement.replayed),
            )

        return await mutate(RecordPurchasePayload, run)
