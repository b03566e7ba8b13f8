"""Reading appeals: a member their own (at the app's merchant), merchant staff their
merchant's, operators and auditors all; statistics per merchant for the operator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alliance.appeals.models import AppealStatus
from alliance.appeals.service import AppealView
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden

_COLUMNS = (
    "a.id, a.merchant_id, a.program_id, a.membership_id, a.member_id, a.transaction_id,"
    " a.entry_id, a.reason, a.body, a.status, a.respond_by, a.resolve_by,"
    " a.first_response_at, a.closed_at, a.resolution, a.adjustment_id, a.created_at,"
    " a.updated_at"
)


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    appeal_id: int
    author_role: str
    author: str
    body: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AppealStatistics:
    merchant_id: int
    total: int
    open: int
    in_review: int
    resolved: int
    rejected: int
    response_overdue: int
    """Answered late, or not yet answered past `respond_by`."""
    resolution_overdue: int
    """Closed late, or still live past `resolve_by`."""
    mean_response_seconds: float | None
    mean_resolution_seconds: float | None


def appeal_scope(actor: Actor) -> tuple[str, dict[str, Any]]:
    """The SQL condition on `a` (appeal) for what the actor may read."""
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return "true", {}
    if actor.role is Role.MERCHANT:
        return "a.merchant_id = %(scope_merchant)s::bigint", {"scope_merchant": actor.merchant_id}
    if actor.role is Role.MEMBER:
        return (
            "a.merchant_id = %(scope_merchant)s::bigint AND a.member_id = %(scope_member)s::bigint",
            {"scope_merchant": actor.merchant_id, "scope_member": actor.member_id},
        )
    raise Forbidden("appeals are for members, merchant staff, operators and auditors")


async def appeals_page(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    status: AppealStatus | None = None,
) -> tuple[list[AppealView], bool]:
    """Newest first."""
    condition, params = appeal_scope(actor)
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM appeal a WHERE {condition}"
        " AND a.id < coalesce(%(after)s::bigint, 9223372036854775807)"
        " AND (%(status)s::text IS NULL OR a.status = %(status)s::text)"
        " ORDER BY a.id DESC LIMIT %(limit)s",
        {
            "after": after,
            "status": None if status is None else AppealStatus(status).value,
            "limit": first + 1,
            **params,
        },
    )
    return [AppealView(*row) for row in rows[:first]], len(rows) > first


async def appeals_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, AppealView]:
    try:
        condition, params = appeal_scope(actor)
    except Forbidden:
        return {}
    rows = await db.fetch_all(
        f"SELECT {_COLUMNS} FROM appeal a WHERE a.id = ANY(%(ids)s) AND {condition}",
        {"ids": list(ids), **params},
    )
    return {row[0]: AppealView(*row) for row in rows}


async def messages_of_appeals(
    db: Database, actor: Actor, appeal_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, tuple[list[MessageView], bool]]:
    """One page of each appeal's thread, oldest first, in one statement."""
    try:
        condition, params = appeal_scope(actor)
    except Forbidden:
        return {appeal_id: ([], False) for appeal_id in appeal_ids}
    rows = await db.fetch_all(
        "SELECT m.id, m.appeal_id, m.author_role, m.author, m.body, m.created_at"
        " FROM unnest(%(ids)s::bigint[]) AS parent(id)"
        f" JOIN appeal a ON a.id = parent.id AND {condition}"
        " CROSS JOIN LATERAL (SELECT * FROM appeal_message x WHERE x.appeal_id = a.id"
        " AND x.id > coalesce(%(after)s::bigint, 0) ORDER BY x.id LIMIT %(limit)s) m",
        {"ids": list(appeal_ids), "after": after, "limit": first + 1, **params},
    )
    grouped: dict[int, list[MessageView]] = {appeal_id: [] for appeal_id in appeal_ids}
    for row in rows:
        grouped[row[1]].append(MessageView(*row))
    return {key: (items[:first], len(items) > first) for key, items in grouped.items()}


async def appeal_statistics(db: Database, actor: Actor) -> list[AppealStatistics]:
    """Per merchant with any appeal, by merchant id (operator, auditor)."""
    actor.require(Role.OPERATOR, Role.AUDITOR)
    rows = await db.fetch_all(
        "SELECT merchant_id, count(*),"
        " count(*) FILTER (WHERE status = 'open'),"
        " count(*) FILTER (WHERE status = 'in_review'),"
        " count(*) FILTER (WHERE status = 'resolved'),"
        " count(*) FILTER (WHERE status = 'rejected'),"
        " count(*) FILTER (WHERE coalesce(first_response_at, now()) > respond_by),"
        " count(*) FILTER (WHERE coalesce(closed_at, now()) > resolve_by),"
        " avg(extract(epoch FROM first_response_at - created_at))::float8,"
        " avg(extract(epoch FROM closed_at - created_at))::float8"
        " FROM appeal GROUP BY merchant_id ORDER BY merchant_id"
    )
    return [AppealStatistics(*row) for row in rows]
