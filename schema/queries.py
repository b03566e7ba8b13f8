"""Root queries: each resolves through a loader or one domain read."""

from __future__ import annotations

import asyncio
import inspect

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission
from strawberry.relay.types import GlobalIDValueError

from alliance.db.paging import MAX_PAGE_SIZE
from alliance.errors import InvalidInput
from alliance.members.queries import membership_by_number
from alliance.programs.queries import list_merchants, list_programs
from schema.adjustments import AdjustmentQueries
from schema.appeals import AppealQueries
from schema.audit import AuditQueries
from schema.context import Info
from schema.exchange import ExchangeQueries
from schema.identity import IdentityQueries
from schema.pagination import DEFAULT_PAGE_SIZE, build_connection, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.rewards import RewardQueries
from schema.rules import RuleQueries
from schema.settlement import SettlementQueries
from schema.types import (
    Member,
    Membership,
    Merchant,
    MerchantConnection,
    Program,
    ProgramConnection,
    Viewer,
    node_pk,
)
from schema.webhooks import WebhookQueries

authenticated: list[type[BasePermission]] = [IsAuthenticated]


async def _resolve_node(info: Info, global_id: relay.GlobalID) -> relay.Node | None:
    try:
        node_type = global_id.resolve_type(info)
    except GlobalIDValueError:
        return None  # an id of no type of ours names nothing, like an unknown one
    found = node_type.resolve_nodes(info=info, node_ids=[global_id.node_id])
    if inspect.isawaitable(found):
        found = await found
    return next(iter(found), None)


@strawberry.type
class Query(
    RuleQueries,
    ExchangeQueries,
    SettlementQueries,
    AuditQueries,
    AdjustmentQueries,
    AppealQueries,
    WebhookQueries,
    IdentityQueries,
    RewardQueries,
):
    @strawberry.field(
        permission_classes=authenticated,
        description="Any object by id; null when not found or not yours.",
    )
    async def node(self, info: Info, id: relay.GlobalID) -> relay.Node | None:
        return await _resolve_node(info, id)

    @strawberry.field(
        permission_classes=authenticated,
        description="Up to 100 nodes by id; null where not found or not yours.",
    )
    async def nodes(self, info: Info, ids: list[relay.GlobalID]) -> list[relay.Node | None]:
        if len(ids) > MAX_PAGE_SIZE:
            raise InvalidInput(f"at most {MAX_PAGE_SIZE} ids", field=("ids",))
        # Concurrent loads of one type meet in one DataLoader batch: one statement per type.
        return await asyncio.gather(*(_resolve_node(info, global_id) for global_id in ids))

    @strawberry.field(permission_classes=authenticated)
    def viewer(self, info: Info) -> Viewer:
        actor = info.context.actor
        return Viewer(
            role=actor.role,
            client_id=actor.client_id,
            merchant_id=actor.merchant_id,
            member_id=actor.member_id,
            membership_id=actor.membership_id,
        )

    @strawberry.field(permission_classes=authenticated, description="The alliance's merchants.")
    async def merchants(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> MerchantConnection:
        first, after_key = check_first(first), decode_cursor(after)
        page = await list_merchants(
            info.context.db, info.context.actor, first=first, after=after_key
        )
        return build_connection(
            MerchantConnection, page, Merchant.from_record, lambda r: r.id, after=after_key
        )

    @strawberry.field(permission_classes=authenticated, description="Points programs.")
    async def programs(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        merchant_id: relay.GlobalID | None = None,
    ) -> ProgramConnection:
        first, after_key = check_first(first), decode_cursor(after)
        merchant_pk = None if merchant_id is None else node_pk(merchant_id, Merchant, "merchantId")
        page = await list_programs(
            info.context.db,
            info.context.actor,
            first=first,
            after=after_key,
            merchant_id=merchant_pk,
        )
        return build_connection(
            ProgramConnection, page, Program.from_record, lambda r: r.id, after=after_key
        )

    @strawberry.field(
        permission_classes=authenticated, description="A member you may see, or null."
    )
    async def member(self, info: Info, id: relay.GlobalID) -> Member | None:
        record = await info.context.loaders.member.load(node_pk(id, Member, "id"))
        return None if record is None else Member.from_record(record)

    @strawberry.field(
        permission_classes=authenticated,
        description="A membership you may see, by id or by program and number.",
    )
    async def membership(
        self,
        info: Info,
        id: relay.GlobalID | None = None,
        program_id: relay.GlobalID | None = None,
        member_number: str | None = None,
    ) -> Membership | None:
        if id is not None:
            record = await info.context.loaders.membership.load(node_pk(id, Membership, "id"))
        elif program_id is not None and member_number is not None:
            record = await membership_by_number(
                info.context.db,
                info.context.actor,
                program_id=node_pk(program_id, Program, "programId"),
                member_number=member_number,
            )
        else:
            raise InvalidInput("give id, or programId and memberNumber", field=("id",))
        return None if record is None else Membership.from_record(record)
