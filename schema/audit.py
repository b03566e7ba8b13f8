"""GraphQL for the audit trail: a connection of records with filters."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Self

import strawberry
from strawberry import relay
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from alliance.audit.queries import AuditFilter, AuditRecordView, audit_page
from schema.context import Info
from schema.pagination import DEFAULT_PAGE_SIZE, check_first, decode_cursor
from schema.permissions import IsAuthenticated
from schema.scalars import BigInt
from schema.types import Merchant, load_nodes, page_connection

authenticated: list[type[BasePermission]] = [IsAuthenticated]


@strawberry.type(
    description="A privileged act, written in the act's own transaction and never changed. "
    "Records of a UTC day form a hash chain that `alliance verify` recomputes."
)
class AuditRecord(relay.Node):
    id: relay.NodeID[int]
    actor: str = strawberry.field(description="The acting subject: `client:<id>`, `member:<id>`,"
                                  " or `system:<job>`.")  # fmt: skip
    client_id: str | None = strawberry.field(description="The OAuth client behind the act.")
    role: str
    action: str = strawberry.field(description="e.g. `adjustment.approve`, `program.create`.")
    target: str = strawberry.field(description="What it acted on, e.g. `membership:17`.")
    before: JSON | None = strawberry.field(description="The target's state before, if it had one.")
    after: JSON | None
    request_id: str | None = strawberry.field(description="The request it came with (logs).")
    merchant_id: strawberry.Private[int | None]
    created_at: datetime
    chain_day: date
    chain_seq: BigInt = strawberry.field(description="1, 2, 3… within its day.")
    previous_hash: str = strawberry.field(description="SHA-256 (hex) of the day's previous "
                                          "record; zeros for the first.")  # fmt: skip
    hash: str = strawberry.field(description="sha256(previousHash ‖ canonical content), hex.")

    @classmethod
    def from_record(cls, r: AuditRecordView) -> Self:
        return cls(
            id=r.id, actor=r.actor, client_id=r.client_id, role=r.role, action=r.action,
            target=r.target, before=JSON(r.before) if r.before is not None else None,
            after=JSON(r.after) if r.after is not None else None, request_id=r.request_id,
            merchant_id=r.merchant_id, created_at=r.created_at, chain_day=r.chain_day,
            chain_seq=BigInt(r.chain_seq), previous_hash=bytes(r.previous_hash).hex(),
            hash=bytes(r.hash).hex(),
        )  # fmt: skip

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Self | None]:
        return await load_nodes(info.context.loaders.audit_record, node_ids, cls.from_record)

    @strawberry.field(description="The merchant the act concerns, if any.")
    async def merchant(self, info: Info) -> Merchant | None:
        if self.merchant_id is None:
            return None
        record = await info.context.loaders.merchant.load(self.merchant_id)
        return None if record is None else Merchant.from_record(record)


@strawberry.type(name="AuditRecordConnection")
class AuditRecordConnection(relay.Connection[AuditRecord]):
    pass


@strawberry.type
class AuditQueries:
    @strawberry.field(
        permission_classes=authenticated,
        description="The audit trail, newest first (operators and auditors: all of it; "
        "merchant staff: the records about their merchant). Filters match exactly; "
        "`since` is inclusive, `until` exclusive.",
    )
    async def audit_records(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AuditRecordConnection:
        first, after_key = check_first(first), decode_cursor(after)
        items, more = await audit_page(
            info.context.db, info.context.actor, first=first, after=after_key,
            where=AuditFilter(actor, target, action, since, until),
        )  # fmt: skip
        return page_connection(
            AuditRecordConnection, items, more, AuditRecord.from_record, after=after_key
        )
