"""GraphQL for member tiers: ladders, a membership's tier, history and progress."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.tiers import service as tiers
from alliance.tiers.ladder import Ladder, TierInput, TierRecord
from alliance.tiers.models import TierBasis, TierChangeReason
from alliance.tiers.queries import TierChangeRecord, TierStanding
from schema.context import Info
from schema.errors import UserError, mutate
from schema.permissions import IsAuthenticated
from schema.types import Program, load_nodes, node_pk

strawberry.enum(TierBasis, name="TierBasis")
strawberry.enum(TierChangeReason, name="TierChangeReason")

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="A rung of a program's tier ladder, as one ladder version has it.")
class Tier(relay.Node):
    id: relay.NodeID[int]
    code: str = strawberry.field(description="The tier's identity across ladder versions.")
    name: str
    rank: int = strawberry.field(description="0 is the entry tier every member starts in.")
    threshold: Decimal = strawberry.field(
        description="Qualifying total (spend or points, per the policy) that reaches it."
    )
    multiplier: Decimal = strawberry.field(description="Earning multiplier of its members.")
    benefits: list[str]
    ladder_version: int

    @classmethod
    def from_record(cls, r: TierRecord) -> Self:
        return cls(id=r.id, code=r.code, name=r.name, rank=r.rank, threshold=r.threshold,
                   multiplier=r.multiplier, benefits=list(r.benefits),
                   ladder_version=r.ladder_version)  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.tier, node_ids, cls.from_record)


@strawberry.type(name="TierConnection")
class TierConnection(relay.Connection[Tier]):
    pass


@strawberry.type(description="How a program's members qualify for its tiers.")
class TierPolicy:
    basis: TierBasis
    window_days: int = strawberry.field(description="Days of activity that count, ending now.")
    grace_days: int = strawberry.field(
        description="Days a member keeps a tier they no longer qualify for."
    )
    version: int = strawberry.field(description="The ladder version in force.")
    changed_at: datetime

    @classmethod
    def from_ladder(cls, ladder: Ladder) -> Self:
        return cls(basis=ladder.basis, window_days=ladder.window_days,
                   grace_days=ladder.grace_days, version=ladder.version,
                   changed_at=ladder.created_at)  # fmt: skip


@strawberry.type(description="One change of a membership's tier.")
class TierChange:
    from_: Tier = strawberry.field(
        name="from", description="The tier before, as its ladder version had it."
    )
    to: Tier = strawberry.field(description="The tier after.")
    reason: TierChangeReason
    qualifying_total: Decimal = strawberry.field(description="The rolling total at the time.")
    at: datetime

    @classmethod
    def from_record(cls, r: TierChangeRecord) -> Self:
        return cls(from_=Tier.from_record(r.from_tier), to=Tier.from_record(r.to_tier),
                   reason=TierChangeReason(r.reason), qualifying_total=r.qualifying_total,
                   at=r.created_at)  # fmt: skip


@strawberry.type(name="TierChangeConnection")
class TierChangeConnection(relay.Connection[TierChange]):  # type: ignore[type-var]  # values
    pass


@strawberry.type(description="Where a membership stands on its program's tier ladder now.")
class TierProgress:
    current: Tier
    next: Tier | None = strawberry.field(description="The next tier up; null at the top.")
    qualifying_total: Decimal = strawberry.field(
        description="Spend or points (per the policy) in the rolling window."
    )
    needed_for_next: Decimal | None = strawberry.field(
        description="What the total still lacks for the next tier; null at the top."
    )
    window_start: datetime = strawberry.field(description="Activity since then counts.")
    downgrade_pending_until: datetime | None = strawberry.field(
        description="The total fell short of the current tier: the grace period ends then."
    )

    @classmethod
    def from_standing(cls, s: TierStanding) -> Self:
        return cls(current=Tier.from_record(s.held),
                   next=None if s.next is None else Tier.from_record(s.next),
                   qualifying_total=s.qualifying_total, needed_for_next=s.needed_for_next,
                   window_start=s.window_start,
                   downgrade_pending_until=s.downgrade_at)  # fmt: skip


@strawberry.input(
    name="TierInput", description="A tier of a ladder being set; listed from the entry tier up."
)
class TierInputType:
    code: str
    name: str
    threshold: Decimal = strawberry.field(description="0 for the entry tier.")
    multiplier: Decimal = Decimal(1)
    benefits: list[str] = strawberry.field(default_factory=list)

    def to_domain(self) -> TierInput:
        return TierInput(self.code, self.name, self.threshold, self.multiplier,
                         tuple(self.benefits))  # fmt: skip


@strawberry.input
class SetTierLadderInput:
    program_id: relay.GlobalID
    basis: TierBasis
    window_days: int = strawberry.field(description="Rolling window, e.g. 365.")
    grace_days: int
    tiers: list[TierInputType] = strawberry.field(
        description="From the entry tier (rank 0, threshold 0) up; at most 10."
    )


@strawberry.type
class SetTierLadderPayload:
    program: Program | None = None
    policy: TierPolicy | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TierMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="A new version of your program's tier ladder, in force at once; earlier "
        "versions stay as they were. Setting the ladder in force again changes nothing.",
    )
    async def set_tier_ladder(self, info: Info, input: SetTierLadderInput) -> SetTierLadderPayload:
        async def run() -> SetTierLadderPayload:
            program_id = node_pk(input.program_id, Program, "programId")
            ladder = await tiers.set_tier_ladder(
                info.context.db, info.context.actor, program_id=program_id, basis=input.basis,
                window_days=input.window_days, grace_days=input.grace_days,
                tiers=[tier.to_domain() for tier in input.tiers],
            )  # fmt: skip
            # What this request may have read before is stale now.
            loaders = info.context.loaders
            loaders.tier_policy.prime(program_id, ladder, force=True)
            loaders.tiers_of_program.clear_all()
            loaders.held_tier.clear_all()
            loaders.tier_standing.clear_all()
            program = await loaders.program.load(program_id)
            return SetTierLadderPayload(
                program=None if program is None else Program.from_record(program),
                policy=TierPolicy.from_ladder(ladder),
            )

        return await mutate(SetTierLadderPayload, run)
