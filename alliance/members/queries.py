"""Reading members, memberships, balances and points history, filtered by the actor.

Who sees member-level data: the operator and auditors see everyone; a merchant
sees the memberships of its own programs (and the members behind them, through
those memberships only); a member sees themself, and through a merchant's app
only that merchant's programs (what the app shows, the merchant sees: wider
views need the member's consent); finance sees aggregates only.
Invisible rows are simply absent, so an unknown id and a foreign one look alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.paging import Page, fetch_pages_by_parent
from alliance.ledger.models import Account, LedgerTransaction, Lot, Posting
from alliance.members.models import Member, Membership
from alliance.programs.models import Program

member_table = Member.__table__
membership_table = Membership.__table__
account_table = Account.__table__
program_table = Program.__table__
posting_table = Posting.__table__
transaction_table = LedgerTransaction.__table__
lot_table = Lot.__table__


@dataclass(frozen=True, slots=True)
class MemberRecord:
    id: int
    display_name: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> MemberRecord:
        return cls(row.id, row.display_name, row.created_at)


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    id: int
    member_id: int
    program_id: int
    member_number: str
    status: str
    created_at: datetime
    balance: int
    held: int

    @property
    def available(self) -> int:
        """Balance not reserved by holds (pending or expired lots may still be unspendable)."""
        return self.balance - self.held

    @classmethod
    def from_row(cls, row: Any) -> MembershipRecord:
        return cls(
            row.id,
            row.member_id,
            row.program_id,
            row.member_number,
            row.status,
            row.created_at,
            row.balance,
            row.held,
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One movement on a member account: a posting with its transaction."""

    posting_id: int
    transaction_id: int
    program_id: int
    account_id: int
    kind: str
    reason: str | None
    points: int
    balance_after: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> HistoryEntry:
        return cls(
            row.posting_id,
            row.transaction_id,
            row.program_id,
            row.account_id,
            row.kind,
            row.reason,
            row.amount,
            row.balance_after,
            row.created_at,
        )


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    program_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None


_membership_columns = (
    membership_table.c.id,
    membership_table.c.member_id,
    membership_table.c.program_id,
    membership_table.c.member_number,
    membership_table.c.status,
    membership_table.c.created_at,
    account_table.c.balance,
    account_table.c.held,
)
_memberships = membership_table.join(
    account_table, account_table.c.membership_id == membership_table.c.id
)
_history_columns = (
    posting_table.c.id.label("posting_id"),
    posting_table.c.transaction_id,
    posting_table.c.program_id,
    posting_table.c.account_id,
    posting_table.c.amount,
    posting_table.c.balance_after,
    posting_table.c.created_at,
    transaction_table.c.kind,
    transaction_table.c.reason,
)
_history = posting_table.join(
    transaction_table, transaction_table.c.id == posting_table.c.transaction_id
)


def _merchant_programs(merchant_id: int | None) -> Any:
    return select(program_table.c.id).where(program_table.c.merchant_id == merchant_id)


def readable_memberships(actor: Actor) -> ColumnElement[bool]:
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if actor.role is Role.MERCHANT:
        return membership_table.c.program_id.in_(_merchant_programs(actor.merchant_id))
    if actor.role is Role.MEMBER:
        own = membership_table.c.member_id == actor.member_id
        if actor.merchant_id is None:
            return own
        return and_(own, membership_table.c.program_id.in_(_merchant_programs(actor.merchant_id)))
    return false()


def readable_members(actor: Actor) -> ColumnElement[bool]:
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if actor.role is Role.MERCHANT:
        return exists(
            select(membership_table.c.id).where(
                membership_table.c.member_id == member_table.c.id,
                membership_table.c.program_id.in_(_merchant_programs(actor.merchant_id)),
            )
        )
    if actor.role is Role.MEMBER:
        return member_table.c.id == actor.member_id
    return false()


def readable_postings(actor: Actor) -> ColumnElement[bool]:
    """Member-account postings the actor may see (system legs are never listed here)."""
    if actor.role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if actor.role is Role.MERCHANT:
        return posting_table.c.program_id.in_(_merchant_programs(actor.merchant_id))
    if actor.role is Role.MEMBER:
        own = posting_table.c.member_id == actor.member_id
        if actor.merchant_id is None:
            return own
        return and_(own, posting_table.c.program_id.in_(_merchant_programs(actor.merchant_id)))
    return false()


async def members_by_id(
    conn: AsyncConnection, actor: Actor, ids: Sequence[int]
) -> dict[int, MemberRecord]:
    stmt = select(member_table).where(member_table.c.id.in_(ids), readable_members(actor))
    return {row.id: MemberRecord.from_row(row) for row in await conn.execute(stmt)}


async def memberships_by_id(
    conn: AsyncConnection, actor: Actor, ids: Sequence[int]
) -> dict[int, MembershipRecord]:
    stmt = (
        select(*_membership_columns)
        .select_from(_memberships)
        .where(membership_table.c.id.in_(ids), readable_memberships(actor))
    )
    return {row.id: MembershipRecord.from_row(row) for row in await conn.execute(stmt)}


async def membership_by_number(
    conn: AsyncConnection, actor: Actor, *, program_id: int, member_number: str
) -> MembershipRecord | None:
    stmt = (
        select(*_membership_columns)
        .select_from(_memberships)
        .where(
            membership_table.c.program_id == program_id,
            membership_table.c.member_number == member_number,
            readable_memberships(actor),
        )
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else MembershipRecord.from_row(row)


def _membership_page(parent_column: str, after: int | None) -> Any:
    def build(parent_id: Any) -> Any:
        stmt = (
            select(*_membership_columns)
            .select_from(_memberships)
            .where(membership_table.c[parent_column] == parent_id)
            .order_by(membership_table.c.id)
        )
        return stmt if after is None else stmt.where(membership_table.c.id > after)

    return build


async def membership_pages_by_program(
    conn: AsyncConnection,
    actor: Actor,
    program_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
) -> dict[int, Page[MembershipRecord]]:
    build = _membership_page("program_id", after)

    def page(program_id: Any) -> Any:
        return build(program_id).where(readable_memberships(actor))

    return await fetch_pages_by_parent(conn, program_ids, page, first, MembershipRecord.from_row)


async def membership_pages_by_member(
    conn: AsyncConnection,
    actor: Actor,
    member_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
) -> dict[int, Page[MembershipRecord]]:
    build = _membership_page("member_id", after)

    def page(member_id: Any) -> Any:
        return build(member_id).where(readable_memberships(actor))

    return await fetch_pages_by_parent(conn, member_ids, page, first, MembershipRecord.from_row)


def _history_page(
    actor: Actor, owner: ColumnElement[bool], filters: HistoryFilter, after: int | None
) -> Any:
    conditions = [owner, posting_table.c.balance_after.is_not(None), readable_postings(actor)]
    if filters.program_id is not None:
        conditions.append(posting_table.c.program_id == filters.program_id)
    if filters.since is not None:
        conditions.append(posting_table.c.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(posting_table.c.created_at < filters.until)
    if after is not None:
        conditions.append(posting_table.c.id < after)
    return (
        select(*_history_columns)
        .select_from(_history)
        .where(and_(*conditions))
        .order_by(posting_table.c.id.desc())
    )


async def history_pages_by_membership(
    conn: AsyncConnection,
    actor: Actor,
    membership_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    filters: HistoryFilter,
) -> dict[int, Page[HistoryEntry]]:
    """Newest first. The account is found through the membership, so posting ids order it."""

    def page(membership_id: Any) -> Any:
        account_id = (
            select(account_table.c.id)
            .where(account_table.c.membership_id == membership_id)
            .correlate_except(account_table)
            .scalar_subquery()
        )
        return _history_page(actor, posting_table.c.account_id == account_id, filters, after)

    return await fetch_pages_by_parent(conn, membership_ids, page, first, HistoryEntry.from_row)


async def history_pages_by_member(
    conn: AsyncConnection,
    actor: Actor,
    member_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    filters: HistoryFilter,
) -> dict[int, Page[HistoryEntry]]:
    def page(member_id: Any) -> Any:
        return _history_page(actor, posting_table.c.member_id == member_id, filters, after)

    return await fetch_pages_by_parent(conn, member_ids, page, first, HistoryEntry.from_row)


async def history_page_for_membership(
    conn: AsyncConnection,
    actor: Actor,
    membership_id: int,
    *,
    first: int,
    after: int | None,
    filters: HistoryFilter,
) -> Page[HistoryEntry]:
    pages = await history_pages_by_membership(
        conn, actor, [membership_id], first=first, after=after, filters=filters
    )
    return pages[membership_id]


async def spendable_by_membership(
    conn: AsyncConnection, actor: Actor, membership_ids: Sequence[int]
) -> dict[int, int]:
    """Points spendable now: available, unexpired lots minus holds (what a spend checks)."""
    open_lots = (
        select(func.coalesce(func.sum(lot_table.c.remaining), 0))
        .where(
            lot_table.c.account_id == account_table.c.id,
            lot_table.c.remaining > 0,
            lot_table.c.available_at <= func.now(),
            or_(lot_table.c.expires_at.is_(None), lot_table.c.expires_at > func.now()),
        )
        .scalar_subquery()
    )
    stmt = (
        select(membership_table.c.id, account_table.c.held, open_lots.label("points"))
        .select_from(_memberships)
        .where(membership_table.c.id.in_(membership_ids), readable_memberships(actor))
    )
    return {row.id: max(0, int(row.points) - row.held) for row in await conn.execute(stmt)}


async def entries_by_id(
    conn: AsyncConnection, actor: Actor, ids: Sequence[int]
) -> dict[int, HistoryEntry]:
    """Member-account postings by id (system legs are not entries)."""
    stmt = (
        select(*_history_columns)
        .select_from(_history)
        .where(
            posting_table.c.id.in_(ids),
            posting_table.c.balance_after.is_not(None),
            readable_postings(actor),
        )
    )
    return {row.posting_id: HistoryEntry.from_row(row) for row in await conn.execute(stmt)}
