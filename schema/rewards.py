"""GraphQL for rewards: the catalog, redemptions, coupons at the counter, point gifts and
expiry reminders. Thin: each resolver parses its input and calls one use case."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission

from alliance.rewards import catalog, gifting, redemptions, reminders
from alliance.rewards.catalog import RewardCursor, RewardFilter, RewardRecord, RewardSort
from alliance.rewards.models import LimitPeriod, RedemptionStatus, RewardKind
from alliance.rewards.redemptions import CouponRecord, RedemptionRecord
from schema.context import Info
from schema.errors import UserError, mutate
from schema.holds import Hold
from schema.loaders import forget
from schema.pagination import DEFAULT_PAGE_SIZE, build_connection, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import LedgerEntry, Membership, Program, load_nodes, node_pk

strawberry.enum(RewardKind, name="RewardKind")
strawberry.enum(LimitPeriod, name="LimitPeriod")
strawberry.enum(RewardSort, name="RewardSort")
strawberry.enum(RedemptionStatus, name="RedemptionStatus")

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(description="A reward of a program's catalog, with the terms of its current "
                 "version.")  # fmt: skip
class Reward(relay.Node):
    id: relay.NodeID[int]
    program_id: strawberry.Private[int]
    code: str
    status: str = strawberry.field(description="active or archived.")
    version: int = strawberry.field(description="The terms' version; redemptions keep theirs.")
    kind: RewardKind
    name: str
    description: str
    points_price: BigInt
    cash_price: Decimal = strawberry.field(description="Money paid beside the points.")
    stock: BigInt | None = strawberry.field(description="Units left; null: unlimited.")
    redeemed: BigInt = strawberry.field(
        description="Standing redemptions (reserved, fulfilled, completed): its popularity."
    )
    limit_total: int | None = strawberry.field(description="Per member, in all.")
    limit_per_period: int | None = strawberry.field(description="Per member per period.")
    limit_period: LimitPeriod | None = strawberry.field(
        description="Periods are cut in the alliance time zone; weeks start on Monday."
    )
    tier_codes: list[str] = strawberry.field(description="Audience; empty: every member.")
    valid_from: datetime
    valid_until: datetime | None
    image_urls: list[str]
    reserve_minutes: int = strawberry.field(description="A reservation lapses unfulfilled "
                                            "after this.")  # fmt: skip
    complete_days: int = strawberry.field(description="A fulfilment (coupon validity, "
                                          "delivery) lapses uncompleted after this.")  # fmt: skip
    created_at: datetime
    updated_at: datetime = strawberry.field(description="When the current version was written.")

    @classmethod
    def from_record(cls, r: RewardRecord) -> Self:
        return cls(
            id=r.id, program_id=r.program_id, code=r.code, status=r.status, version=r.version,
            kind=RewardKind(r.kind), name=r.name, description=r.description,
            points_price=BigInt(r.points_price), cash_price=r.cash_price,
            stock=None if r.stock is None else BigInt(r.stock), redeemed=BigInt(r.redeemed),
            limit_total=r.limit_total, limit_per_period=r.limit_per_period,
            limit_period=None if r.limit_period is None else LimitPeriod(r.limit_period),
            tier_codes=r.tier_codes, valid_from=r.valid_from, valid_until=r.valid_until,
            image_urls=r.image_urls, reserve_minutes=r.reserve_minutes,
            complete_days=r.complete_days, created_at=r.created_at,
            updated_at=r.version_created_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.reward, node_ids, cls.from_record)

    @strawberry.field
    async def program(self, info: Info) -> Program:
        record = await info.context.loaders.program.load(self.program_id)
        assert record is not None, "programs are readable by every actor"
        return Program.from_record(record)

    @strawberry.field(
        description="Whether your spendable points pay for it now (member tokens; null for others)."
    )
    async def can_afford(self, info: Info) -> bool | None:
        return await info.context.loaders.can_afford.load(self.id)

    @strawberry.field(
        description="Its price in the points of a program: its own program's points price, "
        "or, for another merchant's program whose points its merchant accepts, that many "
        "of those points (the value rounded up); null when that program's points do not "
        "pay for it. reserveReward with a membership of that program pays it."
    )
    async def price_in(self, info: Info, program_id: relay.GlobalID) -> BigInt | None:
        program = node_pk(program_id, Program, "programId")
        points = await info.context.loaders.price_in.load((self.id, program))
        return None if points is None else BigInt(points)


@strawberry.type(name="RewardConnection")
class RewardConnection(relay.Connection[Reward]):
    pass


@strawberry.type(description="A code issued for a redemption, used once at the counter.")
class Coupon:
    code: str
    status: str = strawberry.field(description="issued, used or void.")
    valid_until: datetime
    used_at: datetime | None
    used_store: str | None

    @classmethod
    def from_record(cls, r: CouponRecord) -> Self:
        return cls(code=r.code, status=r.status, valid_until=r.valid_until, used_at=r.used_at,
                   used_store=r.used_store)  # fmt: skip


@strawberry.type(description="A member's redemption of a reward.")
class Redemption(relay.Node):
    id: relay.NodeID[int]
    reward_id: strawberry.Private[int]
    reward_version_id: strawberry.Private[int]
    membership_id: strawberry.Private[int]
    hold_id: strawberry.Private[int]
    paid_program_id: strawberry.Private[int]
    status: RedemptionStatus
    points: BigInt = strawberry.field(description="Held while open, spent when completed.")
    cash_price: Decimal
    expires_at: datetime = strawberry.field(
        description="Deadline of the open state: fulfil by (reserved), complete by (fulfilled)."
    )
    fulfilment: str | None = strawberry.field(description="coupon or shipment.")
    carrier: str | None
    tracking_number: str | None
    created_at: datetime
    fulfilled_at: datetime | None
    closed_at: datetime | None

    @classmethod
    def from_record(cls, r: RedemptionRecord) -> Self:
        return cls(
            id=r.id, reward_id=r.reward_id, reward_version_id=r.reward_version_id,
            membership_id=r.membership_id, hold_id=r.hold_id, paid_program_id=r.paid_program_id,
            status=RedemptionStatus(r.status), points=BigInt(r.points), cash_price=r.cash_price,
            expires_at=r.expires_at, fulfilment=r.fulfilment, carrier=r.carrier,
            tracking_number=r.tracking_number, created_at=r.created_at,
            fulfilled_at=r.fulfilled_at, closed_at=r.closed_at,
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.redemption, node_ids, cls.from_record)

    @strawberry.field(description="The reward as it is now (its current version).")
    async def reward(self, info: Info) -> Reward | None:
        record = await info.context.loaders.reward.load(self.reward_id)
        return None if record is None else Reward.from_record(record)

    @strawberry.field(description="The version of the reward's terms it was reserved under.")
    async def reward_version(self, info: Info) -> int | None:
        return await info.context.loaders.reward_version_number.load(self.reward_version_id)

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)

    @strawberry.field(
        description="The program whose points pay for it: the reward's own, or another "
        "merchant's whose points the reward's merchant accepts; then `points` are that "
        "program's, and completing it makes that program's merchant owe the reward's "
        "merchant their value (settlement)."
    )
    async def paid_program(self, info: Info) -> Program:
        record = await info.context.loaders.program.load(self.paid_program_id)
        assert record is not None, "programs are readable by every actor"
        return Program.from_record(record)

    @strawberry.field(description="The points hold behind it.")
    async def hold(self, info: Info) -> Hold | None:
        record = await info.context.loaders.hold.load(self.hold_id)
        return None if record is None else Hold.from_record(record)

    @strawberry.field(description="Its coupon, when fulfilled with one.")
    async def coupon(self, info: Info) -> Coupon | None:
        record = await info.context.loaders.coupon.load(self.id)
        return None if record is None else Coupon.from_record(record)


@strawberry.type(name="RedemptionConnection")
class RedemptionConnection(relay.Connection[Redemption]):
    pass


@strawberry.type(description="A member whose points expire soon, and what they could buy.")
class ExpiryReminder:
    membership_id: strawberry.Private[int]
    reward_ids: strawberry.Private[list[int]]
    points_expiring: BigInt
    first_expires_at: datetime
    spendable: BigInt

    @strawberry.field
    async def membership(self, info: Info) -> Membership | None:
        record = await info.context.loaders.membership.load(self.membership_id)
        return None if record is None else Membership.from_record(record)

    @strawberry.field(description="Up to 5 available rewards the spendable points pay for, "
                      "dearest first.")  # fmt: skip
    async def affordable_rewards(self, info: Info) -> list[Reward]:
        records = await info.context.loaders.reward.load_many(self.reward_ids)
        return [Reward.from_record(r) for r in records if r is not None]


@strawberry.type(name="ExpiryReminderConnection")
class ExpiryReminderConnection(relay.Connection[ExpiryReminder]):  # type: ignore[type-var]
    pass


@strawberry.type(description="Whether and how much members may give each other points.")
class GiftPolicy:
    enabled: bool
    max_points_per_gift: BigInt
    daily_limit_points: BigInt = strawberry.field(description="Per sender per day.")

    @classmethod
    def from_record(cls, r: gifting.GiftPolicyRecord) -> Self:
        return cls(enabled=r.enabled, max_points_per_gift=BigInt(r.max_points_per_gift),
                   daily_limit_points=BigInt(r.daily_limit_points))  # fmt: skip


@strawberry.type
class RewardQueries:
    @strawberry.field(permission_classes=authenticated,
                      description="A program's reward catalog.")  # fmt: skip
    async def rewards(
        self,
        info: Info,
        program_id: relay.GlobalID,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        sort: RewardSort = RewardSort.PRICE_ASC,
        kinds: list[RewardKind] | None = None,
        min_points: int | None = None,
        max_points: int | None = None,
        available_only: Annotated[
            bool, strawberry.argument(description="Active, in its validity window, in stock.")
        ] = True,
        affordable_only: Annotated[
            bool,
            strawberry.argument(description="What your spendable points pay for (members)."),
        ] = False,
        include_archived: bool = False,
    ) -> RewardConnection:
        found = await catalog.browse_rewards(
            info.context.db, info.context.actor,
            program_id=node_pk(program_id, Program, "programId"),
            filters=RewardFilter(tuple(kinds or ()), min_points, max_points, available_only,
                                 affordable_only, include_archived),
            sort=sort, first=check_first(first),
            after=None if after is None else RewardCursor.decode(after, sort),
        )  # fmt: skip
        pairs = zip(found.cursors, found.page.items, strict=True)
        edges = [relay.Edge(cursor=cursor, node=Reward.from_record(r)) for cursor, r in pairs]
        return RewardConnection(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=found.page.has_next_page, has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )  # fmt: skip

    @strawberry.field(permission_classes=authenticated,
                      description="A membership's redemptions, newest first.")  # fmt: skip
    async def redemptions(
        self,
        info: Info,
        membership_id: relay.GlobalID,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> RedemptionConnection:
        from schema.loaders import PageArgs

        args = PageArgs(check_first(first), decode_cursor(after))
        parent = node_pk(membership_id, Membership, "membershipId")
        page = await info.context.loaders.redemptions_of_membership.load((parent, args))
        return build_connection(RedemptionConnection, page, Redemption.from_record,
                                lambda r: r.id, after=args.after)  # fmt: skip

    @strawberry.field(
        permission_classes=authenticated,
        description="A reward's redemptions, oldest first; status RESERVED is the fulfilment "
        "queue (merchant, finance, operator, auditor).",
    )
    async def reward_redemptions(
        self,
        info: Info,
        reward_id: relay.GlobalID,
        status: RedemptionStatus | None = None,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> RedemptionConnection:
        after_key = decode_cursor(after)
        page = await redemptions.redemptions_of_reward(
            info.context.db, info.context.actor, reward_id=node_pk(reward_id, Reward, "rewardId"),
            status=None if status is None else status.value, first=check_first(first),
            after=after_key,
        )  # fmt: skip
        return build_connection(RedemptionConnection, page, Redemption.from_record,
                                lambda r: r.id, after=after_key)  # fmt: skip

    @strawberry.field(
        permission_classes=authenticated,
        description="Members of a program whose points expire within withinDays, with the "
        "rewards they can afford (merchant, operator).",
    )
    async def expiry_reminders(
        self,
        info: Info,
        program_id: relay.GlobalID,
        within_days: int = 30,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> ExpiryReminderConnection:
        after_key = decode_cursor(after)
        page = await reminders.expiry_reminders(
            info.context.db, info.context.actor,
            program_id=node_pk(program_id, Program, "programId"), within_days=within_days,
            first=check_first(first), after=after_key,
        )  # fmt: skip
        return build_connection(
            ExpiryReminderConnection, page,
            lambda r: ExpiryReminder(membership_id=r.membership_id,
                                     reward_ids=r.affordable_reward_ids,
                                     points_expiring=BigInt(r.points_expiring),
                                     first_expires_at=r.first_expires_at,
                                     spendable=BigInt(r.spendable)),
            lambda r: r.membership_id, after=after_key,
        )  # fmt: skip

    @strawberry.field(
        permission_classes=authenticated,
        description="A program's gift policy (gifts are off by default).",
    )
    async def gift_policy(self, info: Info, program_id: relay.GlobalID) -> GiftPolicy:
        record = await gifting.gift_policy(info.context.db,
                                           node_pk(program_id, Program, "programId"))  # fmt: skip
        return GiftPolicy.from_record(record)


# -- mutations -------------------------------------------------------------------------


@strawberry.input(description="The terms of a reward version.")
class RewardTermsInput:
    kind: RewardKind
    name: str
    points_price: BigInt
    description: str = ""
    cash_price: Decimal = Decimal(0)
    limit_total: int | None = None
    limit_per_period: int | None = None
    limit_period: LimitPeriod | None = None
    tier_codes: list[str] = strawberry.field(default_factory=list)
    valid_from: datetime | None = strawberry.field(default=None, description="Default: now.")
    valid_until: datetime | None = None
    image_urls: list[str] = strawberry.field(default_factory=list)
    reserve_minutes: int = 30
    complete_days: int = 30

    def to_domain(self) -> catalog.RewardTerms:
        return catalog.RewardTerms(
            kind=self.kind, name=self.name, points_price=self.points_price,
            description=self.description, cash_price=self.cash_price,
            limit_total=self.limit_total, limit_per_period=self.limit_per_period,
            limit_period=self.limit_period, tier_codes=tuple(self.tier_codes),
            valid_from=self.valid_from, valid_until=self.valid_until,
            image_urls=tuple(self.image_urls), reserve_minutes=self.reserve_minutes,
            complete_days=self.complete_days,
        )  # fmt: skip


@strawberry.input
class CreateRewardInput:
    program_id: relay.GlobalID
    code: str
    terms: RewardTermsInput
    stock: BigInt | None = strawberry.field(default=None, description="Null: unlimited.")


@strawberry.input
class UpdateRewardInput:
    reward_id: relay.GlobalID
    terms: RewardTermsInput = strawberry.field(description="The new version's full terms.")
    add_stock: BigInt = strawberry.field(default=BigInt(0), description="More units.")


@strawberry.input
class ArchiveRewardInput:
    reward_id: relay.GlobalID


@strawberry.type
class RewardPayload:
    reward: Reward | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ReserveRewardInput:
    membership_id: relay.GlobalID
    reward_id: relay.GlobalID
    idempotency_key: str


@strawberry.type
class ReserveRewardPayload:
    redemption: Redemption | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ShipmentInput:
    carrier: str
    tracking_number: str


@strawberry.input
class FulfilRedemptionInput:
    redemption_id: relay.GlobalID
    shipment: ShipmentInput | None = strawberry.field(
        default=None, description="For goods and gifts; the other kinds get a coupon code."
    )


@strawberry.input
class RedemptionInput:
    redemption_id: relay.GlobalID


@strawberry.type
class RedemptionPayload:
    redemption: Redemption | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RedeemCouponInput:
    code: str
    store: str = strawberry.field(description="The store (counter) where it is used.")


@strawberry.input
class SetGiftPolicyInput:
    program_id: relay.GlobalID
    enabled: bool
    max_points_per_gift: BigInt
    daily_limit_points: BigInt


@strawberry.type
class SetGiftPolicyPayload:
    gift_policy: GiftPolicy | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class GiftPointsInput:
    from_membership_id: relay.GlobalID
    to_membership_id: relay.GlobalID | None = None
    to_member_number: str | None = strawberry.field(
        default=None, description="Or the recipient's member number in the program."
    )
    points: BigInt
    message: str = ""
    idempotency_key: str


@strawberry.type
class GiftPointsPayload:
    entry: LedgerEntry | None = strawberry.field(default=None,
                                                 description="The sender's entry.")  # fmt: skip
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _redemption(info: Info, redemption_id: int) -> Redemption | None:
    for loader in (info.context.loaders.redemption, info.context.loaders.coupon):
        forget(loader, redemption_id)
    record = await info.context.loaders.redemption.load(redemption_id)
    return None if record is None else Redemption.from_record(record)


@strawberry.type
class RewardMutations:
    @strawberry.mutation(permission_classes=authenticated,
                         description="A reward in one of your programs (merchant).")  # fmt: skip
    async def create_reward(self, info: Info, input: CreateRewardInput) -> RewardPayload:
        async def run() -> RewardPayload:
            record = await catalog.create_reward(
                info.context.db, info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"), code=input.code,
                terms=input.terms.to_domain(), stock=input.stock,
            )  # fmt: skip
            return RewardPayload(reward=Reward.from_record(record))

        return await mutate(RewardPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="New terms as a new version; redemptions keep theirs (merchant).",
    )
    async def update_reward(self, info: Info, input: UpdateRewardInput) -> RewardPayload:
        async def run() -> RewardPayload:
            record = await catalog.update_reward(
                info.context.db, info.context.actor,
                reward_id=node_pk(input.reward_id, Reward, "rewardId"),
                terms=input.terms.to_domain(), add_stock=input.add_stock,
            )  # fmt: skip
            return RewardPayload(reward=Reward.from_record(record))

        return await mutate(RewardPayload, run)

    @strawberry.mutation(permission_classes=authenticated,
                         description="No more reservations of it (merchant).")  # fmt: skip
    async def archive_reward(self, info: Info, input: ArchiveRewardInput) -> RewardPayload:
        async def run() -> RewardPayload:
            record = await catalog.archive_reward(
                info.context.db, info.context.actor,
                reward_id=node_pk(input.reward_id, Reward, "rewardId"),
            )  # fmt: skip
            return RewardPayload(reward=Reward.from_record(record))

        return await mutate(RewardPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Hold a reward's points and take a unit of its stock (the member, or the "
        "merchant for them). A member may pay with a membership of another merchant's "
        "program whose points the reward's merchant accepts (Reward.priceIn gives the "
        "price). Idempotent.",
    )
    async def reserve_reward(self, info: Info, input: ReserveRewardInput) -> ReserveRewardPayload:
        async def run() -> ReserveRewardPayload:
            done = await redemptions.reserve_reward(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                reward_id=node_pk(input.reward_id, Reward, "rewardId"),
                idempotency_key=input.idempotency_key,
            )  # fmt: skip
            return ReserveRewardPayload(redemption=Redemption.from_record(done.redemption),
                                        replayed=done.replayed)  # fmt: skip

        return await mutate(ReserveRewardPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Issue the coupon code, or record the shipment (merchant). Idempotent.",
    )
    async def fulfil_redemption(
        self, info: Info, input: FulfilRedemptionInput
    ) -> RedemptionPayload:
        async def run() -> RedemptionPayload:
            redemption_id = node_pk(input.redemption_id, Redemption, "redemptionId")
            shipment = None
            if input.shipment is not None:
                shipment = redemptions.Shipment(input.shipment.carrier,
                                                input.shipment.tracking_number)  # fmt: skip
            await redemptions.fulfil_redemption(info.context.db, info.context.actor,
                                                redemption_id=redemption_id,
                                                shipment=shipment)  # fmt: skip
            return RedemptionPayload(redemption=await _redemption(info, redemption_id))

        return await mutate(RedemptionPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Spend the held points of a fulfilled redemption (merchant). Idempotent.",
    )
    async def complete_redemption(self, info: Info, input: RedemptionInput) -> RedemptionPayload:
        async def run() -> RedemptionPayload:
            redemption_id = node_pk(input.redemption_id, Redemption, "redemptionId")
            await redemptions.complete_redemption(info.context.db, info.context.actor,
                                                  redemption_id=redemption_id)  # fmt: skip
            return RedemptionPayload(redemption=await _redemption(info, redemption_id))

        return await mutate(RedemptionPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Give the points and the stock back (the member while reserved, the "
        "merchant until completed). Idempotent.",
    )
    async def cancel_redemption(self, info: Info, input: RedemptionInput) -> RedemptionPayload:
        async def run() -> RedemptionPayload:
            redemption_id = node_pk(input.redemption_id, Redemption, "redemptionId")
            await redemptions.cancel_redemption(info.context.db, info.context.actor,
                                                redemption_id=redemption_id)  # fmt: skip
            return RedemptionPayload(redemption=await _redemption(info, redemption_id))

        return await mutate(RedemptionPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Use a coupon at your counter, once; its redemption is completed (merchant).",
    )
    async def redeem_coupon(self, info: Info, input: RedeemCouponInput) -> RedemptionPayload:
        async def run() -> RedemptionPayload:
            used = await redemptions.redeem_coupon(info.context.db, info.context.actor,
                                                   code=input.code, store=input.store)  # fmt: skip
            return RedemptionPayload(redemption=await _redemption(info, used.redemption_id))

        return await mutate(RedemptionPayload, run)

    @strawberry.mutation(permission_classes=authenticated,
                         description="Whether your members may give each other points, and "
                         "how much (merchant).")  # fmt: skip
    async def set_gift_policy(self, info: Info, input: SetGiftPolicyInput) -> SetGiftPolicyPayload:
        async def run() -> SetGiftPolicyPayload:
            record = await gifting.set_gift_policy(
                info.context.db, info.context.actor,
                program_id=node_pk(input.program_id, Program, "programId"),
                enabled=input.enabled, max_points_per_gift=input.max_points_per_gift,
                daily_limit_points=input.daily_limit_points,
            )  # fmt: skip
            return SetGiftPolicyPayload(gift_policy=GiftPolicy.from_record(record))

        return await mutate(SetGiftPolicyPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Give points to another member of the same program (积分转赠), as the "
        "program's gift policy allows. Idempotent.",
    )
    async def gift_points(self, info: Info, input: GiftPointsInput) -> GiftPointsPayload:
        async def run() -> GiftPointsPayload:
            done = await gifting.give_points(
                info.context.db, info.context.actor,
                from_membership_id=node_pk(input.from_membership_id, Membership,
                                           "fromMembershipId"),
                to_membership_id=None if input.to_membership_id is None
                else node_pk(input.to_membership_id, Membership, "toMembershipId"),
                to_member_number=input.to_member_number, points=input.points,
                message=input.message, idempotency_key=input.idempotency_key,
            )  # fmt: skip
            entry = await info.context.loaders.entry.load(done.entry_id)
            return GiftPointsPayload(
                entry=None if entry is None else LedgerEntry.from_entry(entry),
                replayed=done.replayed,
            )

        return await mutate(GiftPointsPayload, run)
