"""GraphQL for identity federation: verification and linking, consents, alliance-wide
balances, merge and unlink, privacy rights. Thin: each resolver calls one use case."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Any, Self

import strawberry
from graphql import FieldNode
from strawberry import relay
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from alliance.db.paging import MAX_PAGE_SIZE
from alliance.errors import InvalidInput, NotFound
from alliance.identity import balances, merge, privacy, service
from alliance.identity.balances import AllianceBalances as BalancesRecord
from alliance.identity.balances import BalanceLine
from alliance.identity.models import ConsentPurpose as ConsentPurposeValue
from alliance.identity.models import IdentifierKind as IdentifierKindValue
from alliance.identity.service import ConsentRecord
from schema.context import Info
from schema.errors import UserError, mutate
from schema.pagination import (
    DEFAULT_PAGE_SIZE,
    build_connection,
    check_first,
    decode_cursor,
    encode_cursor,
)
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import Member, Membership, Merchant, Program, node_pk

authenticated: list[type[BasePermission]] = [IsAuthenticated]

IdentifierKind = strawberry.enum(IdentifierKindValue, name="IdentifierKind")
ConsentPurpose = strawberry.enum(
    ConsentPurposeValue,
    name="ConsentPurpose",
    description="What a member lets one merchant do with their alliance-wide data.",
)


def _verification_pk(global_id: relay.GlobalID) -> int:
    if global_id.type_name != "Verification" or not global_id.node_id.isdigit():
        raise NotFound("no Verification with this id", field=("verificationId",))
    if len(global_id.node_id) >= 19:
        raise NotFound("no Verification with this id", field=("verificationId",))
    return int(global_id.node_id)


@strawberry.type(description="A verified phone or e-mail address of a member.")
class MemberIdentifier:
    kind: IdentifierKind  # type: ignore[valid-type]
    masked: str = strawberry.field(description="e.g. +86138****5678, l***@example.com")
    value: str | None = strawberry.field(description="In full for the member themself only.")
    verified_at: datetime

    @classmethod
    def from_record(cls, record: service.IdentifierRecord) -> Self:
        return cls(kind=record.kind, masked=record.masked, value=record.value,
                   verified_at=record.verified_at)  # fmt: skip


async def member_identifiers(info: Info, member_id: int) -> list[MemberIdentifier]:
    found = await info.context.loaders.identifiers.load(member_id)
    return [MemberIdentifier.from_record(record) for record in found or []]


@strawberry.type(description="A one-time code on its way to a phone or mailbox.")
class Verification:
    id: relay.GlobalID
    kind: IdentifierKind  # type: ignore[valid-type]
    masked_identifier: str = strawberry.field(description="e.g. +86138****5678")
    expires_at: datetime


@strawberry.type(description="One program of the member in the alliance-wide view.")
class AllianceBalanceLine:
    program_id: relay.GlobalID
    merchant_id: strawberry.Private[int]
    program_name: str
    unit_name: str
    point_value: Decimal
    own: bool = strawberry.field(
        description="A program of yours (shown in full); false: shared by the member's consent."
    )
    membership_id: relay.GlobalID | None = strawberry.field(
        description="Only for your own programs."
    )
    member_number: str | None = strawberry.field(description="Only for your own programs.")
    points: BigInt
    held: BigInt
    value: Decimal = strawberry.field(description="points × pointValue, settlement currency.")
    expiring_points: BigInt = strawberry.field(description="Points expiring within the window.")
    next_expiry: datetime | None
    tier_code: str | None = strawberry.field(
        description="Own programs, or with the member's share-tier consent; null: entry tier."
    )
    tier_name: str | None

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant:
        found = await info.context.loaders.merchant.load(self.merchant_id)
        assert found is not None, "merchants are readable by every actor"
        return Merchant.from_record(found)

    @classmethod
    def from_line(cls, line: BalanceLine) -> Self:
        return cls(
            program_id=_global_id("Program", line.program_id),
            merchant_id=line.merchant_id, program_name=line.program_name,
            unit_name=line.unit_name, point_value=line.point_value, own=line.own,
            membership_id=None if line.membership_id is None
            else _global_id("Membership", line.membership_id),
            member_number=line.member_number, points=BigInt(line.points),
            held=BigInt(line.held), value=line.value,
            expiring_points=BigInt(line.expiring_points), next_expiry=line.next_expiry,
            tier_code=line.tier_code, tier_name=line.tier_name,
        )  # fmt: skip


@lru_cache(maxsize=4096)
def _global_id(type_name: str, pk: int) -> relay.GlobalID:
    """Global ids are immutable: each line's are made once, not at every read (~0.4 µs
    each, two a line)."""
    return relay.GlobalID(type_name, str(pk))


@strawberry.type(name="AllianceBalanceLineConnection")
class AllianceBalanceLineConnection(relay.Connection[AllianceBalanceLine]):  # type: ignore[type-var]
    pass


LINES_PAGE_SIZE = MAX_PAGE_SIZE
"""`lines` without `first`: every line at once (a member has a handful of programs)."""


@strawberry.type(description="A member's points across the alliance, as far as you may see.")
class AllianceBalances:
    record: strawberry.Private[BalancesRecord]
    total_value: Decimal = strawberry.field(description="Of every line, not only one page.")
    currency: str
    expiring_points: BigInt = strawberry.field(description="Of every line, not only one page.")
    expiring_within_days: int

    @classmethod
    def from_record(cls, record: BalancesRecord, currency: str) -> Self:
        return cls(
            record=record,
            total_value=record.total_value,
            currency=currency,
            expiring_points=BigInt(record.expiring_points),
            expiring_within_days=record.expiring_within_days,
        )

    @strawberry.field(
        description="One per linked program you may see (at most one per program), oldest "
        "membership first; without `first`, all of them in one page. Read with the totals: "
        "paging costs no further query."
    )
    def lines(
        self, first: int = LINES_PAGE_SIZE, after: str | None = None
    ) -> AllianceBalanceLineConnection:
        after_key = decode_cursor(after)
        page = self.record.page(check_first(first), after_key)
        return build_connection(
            AllianceBalanceLineConnection, page, AllianceBalanceLine.from_line, _BY_PROGRAM,
            after=after_key,
        )  # fmt: skip

    @strawberry.field
    async def member(self, info: Info) -> Member | None:
        found = await info.context.loaders.member.load(self.record.member_id)
        return None if found is None else Member.from_record(found)


@strawberry.type(description="A member's consent to one merchant for one purpose.")
class Consent:
    merchant_id: strawberry.Private[int]
    purpose: ConsentPurpose  # type: ignore[valid-type]
    granted_at: datetime
    withdrawn_at: datetime | None
    active: bool

    @classmethod
    def from_record(cls, record: ConsentRecord) -> Self:
        return cls(merchant_id=record.merchant_id, purpose=record.purpose,
                   granted_at=record.granted_at, withdrawn_at=record.withdrawn_at,
                   active=record.active)  # fmt: skip

    @strawberry.field
    async def merchant(self, info: Info) -> Merchant | None:
        found = await info.context.loaders.merchant.load(self.merchant_id)
        return None if found is None else Merchant.from_record(found)


@strawberry.type
class ConsentEdge:
    cursor: str
    node: Consent


@strawberry.type(description="A Relay connection of consents (consents are not nodes).")
class ConsentConnection:
    edges: list[ConsentEdge]
    page_info: relay.PageInfo


@strawberry.type(description="The alliance's identity and retention settings.")
class PrivacyPolicy:
    code_ttl_seconds: int
    max_attempts: int
    per_identifier_per_hour: int
    per_client_per_hour: int
    verification_retention_days: int
    erase_requires_settlement: bool
    updated_at: datetime | None

    @classmethod
    def from_record(cls, policy: service.Policy) -> Self:
        return cls(**{name: getattr(policy, name) for name in cls.__annotations__})


@strawberry.type(description="Two members found to be one person, folded into one.")
class MemberMerge:
    merge_id: strawberry.Private[int]
    survivor_id: strawberry.Private[int]
    memberships_moved: int
    accounts_folded: int
    points_moved: BigInt
    created_at: datetime

    @classmethod
    def from_result(cls, result: merge.MergeResult) -> Self:
        return cls(merge_id=result.merge_id, survivor_id=result.survivor_id,
                   memberships_moved=result.memberships_moved,
                   accounts_folded=result.accounts_folded,
                   points_moved=BigInt(result.points_moved),
                   created_at=result.created_at)  # fmt: skip

    @strawberry.field
    async def survivor(self, info: Info) -> Member | None:
        found = await info.context.loaders.member.load(self.survivor_id)
        return None if found is None else Member.from_record(found)


# ---------------------------------------------------------------- inputs and payloads


@strawberry.input
class StartVerificationInput:
    membership_id: relay.GlobalID
    phone: str | None = strawberry.field(default=None, description="E.164, or a CN mobile.")
    email: str | None = None


@strawberry.type
class StartVerificationPayload:
    verification: Verification | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class ConfirmVerificationInput:
    verification_id: relay.GlobalID
    code: str


@strawberry.type
class ConfirmVerificationPayload:
    membership_id: strawberry.Private[int | None] = None
    merge: MemberMerge | None = strawberry.field(
        default=None, description="Set when the identifier already belonged to another member."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @strawberry.field(description="The membership, now linked.")
    async def membership(self, info: Info) -> Membership | None:
        if self.membership_id is None:
            return None
        found = await info.context.loaders.membership.load(self.membership_id)
        return None if found is None else Membership.from_record(found)


@strawberry.input
class ConsentInput:
    purpose: ConsentPurpose  # type: ignore[valid-type]
    merchant_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Default: the merchant whose app the member is using."
    )


@strawberry.type
class ConsentPayload:
    consent: Consent | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class MergeMembersInput:
    survivor_id: relay.GlobalID
    absorbed_id: relay.GlobalID
    reason: str
    idempotency_key: str


@strawberry.type
class MergeMembersPayload:
    merge: MemberMerge | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class UnlinkMembershipInput:
    membership_id: relay.GlobalID
    reason: str
    idempotency_key: str


@strawberry.type
class UnlinkMembershipPayload:
    membership_id: strawberry.Private[int | None] = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @strawberry.field(description="The membership, now under a member of its own.")
    async def membership(self, info: Info) -> Membership | None:
        if self.membership_id is None:
            return None
        found = await info.context.loaders.membership.load(self.membership_id)
        return None if found is None else Membership.from_record(found)


@strawberry.input
class MemberDataInput:
    member_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The operator names the member; a member token is itself."
    )


@strawberry.type
class ExportMyDataPayload:
    document: JSON | None = strawberry.field(
        default=None, description="Everything held about the member."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class EraseMemberPayload:
    erased_at: datetime | None = None
    replayed: bool = False
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class SetPrivacyPolicyInput:
    code_ttl_seconds: int | None = None
    max_attempts: int | None = None
    per_identifier_per_hour: int | None = None
    per_client_per_hour: int | None = None
    verification_retention_days: int | None = None
    erase_requires_settlement: bool | None = None


@strawberry.type
class SetPrivacyPolicyPayload:
    policy: PrivacyPolicy | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


_TIER_FIELDS = frozenset({"tierCode", "tierName"})
_BY_PROGRAM = attrgetter("program_id")


def _asks_for_tiers(info: Info) -> bool:
    """Whether the query selects a line's tier (`lines { edges { node { tierCode } } }`).

    Read from the request's syntax tree as graphql-core parsed it (`info.selected_fields`
    would first convert the whole selection, arguments included, on every request). A
    fragment on the way counts as a yes (it is not looked into): the answer may cost a
    little more, never lack what was asked. Remembered per field node: a cached document
    brings the same nodes to every request."""
    nodes = info._raw_info.field_nodes
    found = _TIERS_ASKED.get(id(nodes[0]))
    if found is not None and found[0] is nodes[0] and len(nodes) == 1:
        return found[1]
    asked = any(  # each node is allianceBalances itself
        _path_selects(field, ("lines", "edges", "node"), _TIER_FIELDS) for field in nodes
    )
    if len(nodes) == 1:
        if len(_TIERS_ASKED) >= 1024:
            _TIERS_ASKED.clear()
        _TIERS_ASKED[id(nodes[0])] = (nodes[0], asked)  # the node kept: its id not reused
    return asked


_TIERS_ASKED: dict[int, tuple[FieldNode, bool]] = {}


def _path_selects(node: FieldNode, path: tuple[str, ...], names: frozenset[str]) -> bool:
    """Whether a field of `names` is selected below `node` along `path` (or a fragment is)."""
    selection_set = node.selection_set
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if not isinstance(selection, FieldNode):
            return True
        name = selection.name.value
        if path:
            if name == path[0] and _path_selects(selection, path[1:], names):
                return True
        elif name in names:
            return True
    return False


def _member_pk(global_id: relay.GlobalID | None, field: str) -> int | None:
    return None if global_id is None else node_pk(global_id, Member, field)


def _identifier(input: StartVerificationInput) -> tuple[IdentifierKindValue, str]:
    if (input.phone is None) == (input.email is None):
        raise InvalidInput("give exactly one of phone and email", field=("phone",))
    if input.phone is not None:
        return IdentifierKindValue.PHONE, input.phone
    assert input.email is not None
    return IdentifierKindValue.EMAIL, input.email


# ---------------------------------------------------------------- root fields


@strawberry.type
class IdentityQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="A member's points at every linked program you may see (their consent "
        "decides what other merchants' programs show); null when the membership is not "
        "yours. A member token may omit membershipId.",
    )
    async def alliance_balances(
        self,
        info: Info,
        membership_id: relay.GlobalID | None = None,
        expiring_within_days: int = balances.DEFAULT_EXPIRING_DAYS,
    ) -> AllianceBalances | None:
        found = await balances.alliance_balances(
            info.context.db, info.context.actor,
            membership_id=None if membership_id is None
            else node_pk(membership_id, Membership, "membershipId"),
            expiring_within_days=expiring_within_days,
            tiers=_asks_for_tiers(info),
        )  # fmt: skip
        if found is None:
            return None
        return AllianceBalances.from_record(found, info.context.settings.currency)

    @strawberry.field(
        permission_classes=authenticated,
        description="A member's consents (a member token: its own; a merchant: those given to it).",
    )
    async def consents(
        self,
        info: Info,
        member_id: relay.GlobalID | None = None,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> ConsentConnection:
        first, after_key = check_first(first), decode_cursor(after)
        page = await service.list_consents(
            info.context.db, info.context.actor, member_id=_member_pk(member_id, "memberId"),
            first=first, after=after_key,
        )  # fmt: skip
        edges = [
            ConsentEdge(cursor=encode_cursor(service.consent_key(r)), node=Consent.from_record(r))
            for r in page.items
        ]
        return ConsentConnection(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=after_key is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @strawberry.field(permission_classes=authenticated, description="Operator and auditors.")
    async def privacy_policy(self, info: Info) -> PrivacyPolicy:
        policy = await service.get_privacy_policy(info.context.db, info.context.actor)
        return PrivacyPolicy.from_record(policy)


@strawberry.type
class IdentityMutations:
    @strawberry.mutation(
        permission_classes=authenticated,
        description="Send a one-time code to a phone or e-mail, to link the membership "
        "(merchant, or the member for their own membership).",
    )
    async def start_verification(
        self, info: Info, input: StartVerificationInput
    ) -> StartVerificationPayload:
        async def run() -> StartVerificationPayload:
            kind, identifier = _identifier(input)
            started = await service.start_verification(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                kind=kind, identifier=identifier,
            )  # fmt: skip
            return StartVerificationPayload(
                verification=Verification(
                    id=relay.GlobalID("Verification", str(started.id)),
                    kind=started.kind,
                    masked_identifier=started.masked,
                    expires_at=started.expires_at,
                )
            )

        return await mutate(StartVerificationPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Confirm the code: links the membership to the member who holds the "
        "identifier (merging the two members when they differ).",
    )
    async def confirm_verification(
        self, info: Info, input: ConfirmVerificationInput
    ) -> ConfirmVerificationPayload:
        async def run() -> ConfirmVerificationPayload:
            linked = await service.confirm_verification(
                info.context.db, info.context.actor,
                verification_id=_verification_pk(input.verification_id), code=input.code,
            )  # fmt: skip
            return ConfirmVerificationPayload(
                membership_id=linked.membership_id,
                merge=None if linked.merge is None else MemberMerge.from_result(linked.merge),
            )

        return await mutate(ConfirmVerificationPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated, description="The member grants a consent."
    )
    async def grant_consent(self, info: Info, input: ConsentInput) -> ConsentPayload:
        return await _consent(info, input, granted=True)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="The member withdraws a consent: effective from the next request.",
    )
    async def withdraw_consent(self, info: Info, input: ConsentInput) -> ConsentPayload:
        return await _consent(info, input, granted=False)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Fold one member into another (operator). Idempotent.",
    )
    async def merge_members(self, info: Info, input: MergeMembersInput) -> MergeMembersPayload:
        async def run() -> MergeMembersPayload:
            result = await merge.merge_members(
                info.context.db, info.context.actor,
                survivor_id=node_pk(input.survivor_id, Member, "survivorId"),
                absorbed_id=node_pk(input.absorbed_id, Member, "absorbedId"),
                reason=input.reason, idempotency_key=input.idempotency_key,
            )  # fmt: skip
            return MergeMembersPayload(
                merge=MemberMerge.from_result(result), replayed=result.replayed
            )

        return await mutate(MergeMembersPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Detach a membership from its member; its points stay in its program.",
    )
    async def unlink_membership(
        self, info: Info, input: UnlinkMembershipInput
    ) -> UnlinkMembershipPayload:
        async def run() -> UnlinkMembershipPayload:
            unlinked = await merge.unlink_membership(
                info.context.db, info.context.actor,
                membership_id=node_pk(input.membership_id, Membership, "membershipId"),
                reason=input.reason, idempotency_key=input.idempotency_key,
            )  # fmt: skip
            return UnlinkMembershipPayload(
                membership_id=unlinked.membership_id, replayed=unlinked.replayed
            )

        return await mutate(UnlinkMembershipPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Everything held about the member, as JSON (the member, or the operator).",
    )
    async def export_my_data(self, info: Info, input: MemberDataInput) -> ExportMyDataPayload:
        async def run() -> ExportMyDataPayload:
            document = await privacy.export_member_data(
                info.context.db, info.context.actor,
                member_id=_member_pk(input.member_id, "memberId"),
            )  # fmt: skip
            return ExportMyDataPayload(document=JSON(document))

        return await mutate(ExportMyDataPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Erase (pseudonymise) the member's personal data; balances stay "
        "(the member, or the operator).",
    )
    async def erase_member(self, info: Info, input: MemberDataInput) -> EraseMemberPayload:
        async def run() -> EraseMemberPayload:
            erased = await privacy.erase_member(
                info.context.db, info.context.actor,
                member_id=_member_pk(input.member_id, "memberId"),
            )  # fmt: skip
            return EraseMemberPayload(erased_at=erased.erased_at, replayed=erased.replayed)

        return await mutate(EraseMemberPayload, run)

    @strawberry.mutation(
        permission_classes=authenticated,
        description="Change identity and retention settings (operator).",
    )
    async def set_privacy_policy(
        self, info: Info, input: SetPrivacyPolicyInput
    ) -> SetPrivacyPolicyPayload:
        async def run() -> SetPrivacyPolicyPayload:
            changes: dict[str, Any] = {
                name: value for name, value in vars(input).items() if value is not None
            }
            policy = await service.set_privacy_policy(
                info.context.db, info.context.actor, **changes
            )
            return SetPrivacyPolicyPayload(policy=PrivacyPolicy.from_record(policy))

        return await mutate(SetPrivacyPolicyPayload, run)


async def _consent(info: Info, input: ConsentInput, *, granted: bool) -> ConsentPayload:
    async def run() -> ConsentPayload:
        actor = info.context.actor
        if input.merchant_id is not None:
            merchant_id = node_pk(input.merchant_id, Merchant, "merchantId")
        elif actor.merchant_id is not None:
            merchant_id = actor.merchant_id
        else:
            raise InvalidInput("merchantId is required", field=("merchantId",))
        record = await service.set_consent(
            info.context.db, actor, merchant_id=merchant_id, purpose=input.purpose,
            granted=granted,
        )  # fmt: skip
        return ConsentPayload(consent=Consent.from_record(record))

    return await mutate(ConsentPayload, run)


__all__ = ["IdentityMutations", "IdentityQueries", "Program"]
