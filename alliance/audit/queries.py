"""Reading the audit trail: who may see which records, and pages of them.

Operators and auditors read every record. Merchant staff (merchant clients and a
merchant's own finance team) read the records about their merchant (`merchant_id`):
acts by their own clients and members, and acts by others that the use case records
as concerning their merchant (the operator onboarding them and creating their
programs, the job expiring their adjustment requests). Alliance-wide finance and
members read none: the trail is not theirs to audit, and would show other merchants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, InvalidInput
from alliance.validation import clean_text


@dataclass(frozen=True, slots=True)
class AuditRecordView:
    id: int
    actor: str
    client_id: str | None
    role: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    merchant_id: int | None
    created_at: datetime
    chain_day: date
    chain_seq: int
    previous_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    """The acting subject, e.g. `client:ops-console` or `member:42`."""
    target: str | None = None
    """e.g. `membership:17`."""
    action: str | None = None
    """e.g. `adjustment.approve`."""
    since: datetime | None = None
    """Inclusive."""
    until: datetime | None = None
    """Exclusive."""

    def checked(self) -> AuditFilter:
        def text(value: str | None, field: str) -> str | None:
            return None if value is None else clean_text(value, field, max_length=200)

        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidInput("until must be after since", field=("until",))
        return AuditFilter(
            text(self.actor, "actor"),
            text(self.target, "target"),
            text(self.action, "action"),
            self.since,
            self.until,
        )


_COLUMNS = (
    "a.id, a.actor, a.client_id, a.role, a.action, a.target, a.before, a.after, a.request_id,"
    " a.merchant_id, a.created_at, a.chain_day, a.chain_seq, a.previous_hash, a.hash"
)


def audit_scope(actor: Actor) -> tuple[str, dict[str, Any]]:
    """The SQL condition on `a` (audit_record) for what the actor may read."""
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return "true", {}
    if actor.role in (Role.MERCHANT, Role.FINANCE) and actor.merchant_id is not None:
        return "a.merchant_id = %(scope_merchant)s::bigint", {"scope_merchant": actor.merchant_id}
    raise Forbidden("the audit trail is for operators, auditors and a merchant's own staff")


async def audit_page(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    where: AuditFilter = AuditFilter(),
) -> tuple[list[AuditRecordView], bool]:
    """Newest first. Each filter is an exact match (time: a half-open range)."""
    condition, params = audit_scope(actor)
    where = where.checked()
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM audit_record a WHERE {condition}"
        " AND a.id < coalesce(%(after)s::bigint, 9223372036854775807)"
        " AND (%(actor)s::text IS NULL OR a.actor = %(actor)s::text)"
        " AND (%(target)s::text IS NULL OR a.target = %(target)s::text)"
        " AND (%(action)s::text IS NULL OR a.action = %(action)s::text)"
        " AND (%(since)s::timestamptz IS NULL OR a.created_at >= %(since)s::timestamptz)"
        " AND (%(until)s::timestamptz IS NULL OR a.created_at < %(until)s::timestamptz)"
        " ORDER BY a.id DESC LIMIT %(limit)s",
        {
            "after": after,
            "actor": where.actor,
            "target": where.target,
            "action": where.action,
            "since": where.since,
            "until": where.until,
            "limit": first + 1,
            **params,
        },
    )
    return [AuditRecordView(*row) for row in rows[:first]], len(rows) > first


async def audit_records_by_id(
    db: Database, actor: Actor, ids: Sequence[int]
) -> dict[int, AuditRecordView]:
    """The records the actor may read; the rest are missing (as if unknown)."""
    try:
        condition, params = audit_scope(actor)
    except Forbidden:
        return {}
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM audit_record a WHERE a.id = ANY(%(ids)s) AND {condition}",
        {"ids": list(ids), **params},
    )
    return {row[0]: AuditRecordView(*row) for row in rows}
