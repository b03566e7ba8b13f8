"""Reading members, memberships, balances and points history, filtered by the actor.

Who sees member-level data: the operator and auditors see everyone; a merchant
sees the memberships of its own programs (and the members behind them, through
those memberships only); a member sees themself, and through a merchant's app
only that merchant's programs (what the app shows, the merchant sees: wider
views need the member's consent); finance sees aggregates only.
Invisible rows are simply absent, so an unknown id and a foreign one look alike.

The visibility rules are SQLAlchemy expressions over the actor's parameters
(`actor_merchant`, `actor_member`); each query is compiled once per actor role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    any_,
    bindparam,
    exists,
    false,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.types import DateTime

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.by_ids import ByIds, Statement
from alliance.db.compiled import ACTOR_MEMBER, ACTOR_MERCHANT, Compiled, actor_params, actor_variant
from alliance.db.engine import Database
from alliance.db.paging import (
    LIMIT,
    Page,
    fetch_pages_by_parent,
    ids_param,
    paged_by_parent,
    past_cursor,
)
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
    debt: int
    """Clawback debt: points refunded purchases took back after they were spent."""
    segments: list[str]


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


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    program_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def variant(self) -> tuple[bool, bool, bool]:
        return (self.program_id is not None, self.since is not None, self.until is not None)

    def params(self) -> dict[str, Any]:
        return {"program_id": self.program_id, "since": self.since, "until": self.until}


_member_columns = (member_table.c.id, member_table.c.display_name, member_table.c.created_at)
_membership_columns = (
    membership_table.c.id,
    membership_table.c.member_id,
    membership_table.c.program_id,
    membership_table.c.member_number,
    membership_table.c.status,
    membership_table.c.created_at,
    account_table.c.balance,
    account_table.c.held,
    account_table.c.debt,
    membership_table.c.segments,
)
_memberships = membership_table.join(
    account_table, account_table.c.membership_id == membership_table.c.id
)
_history_columns = (
    posting_table.c.id,
    posting_table.c.transaction_id,
    posting_table.c.program_id,
    posting_table.c.account_id,
    transaction_table.c.kind,
    transaction_table.c.reason,
    posting_table.c.amount,
    posting_table.c.balance_after,
    posting_table.c.created_at,
)
_history = posting_table.join(
    transaction_table, transaction_table.c.id == posting_table.c.transaction_id
)
_entry_table = posting_table.alias("entry")


def _merchant_programs() -> Any:
    return select(program_table.c.id).where(program_table.c.merchant_id == ACTOR_MERCHANT)


def _accounts_of(member: Any) -> Any:
    """The accounts of a member's memberships. After a merge or an unlink an account can
    belong to a member other than its ledger member (the one its postings carry, see
    alliance/identity/merge.py), so postings are found by account, not by member alone."""
    return (
        select(account_table.c.id)
        .select_from(_memberships)
        .where(membership_table.c.member_id == member)
        .correlate_except(membership_table, account_table)
    )


def readable_memberships(role: Role, bound: bool) -> ColumnElement[bool]:
    if role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if role is Role.MERCHANT:
        return membership_table.c.program_id.in_(_merchant_programs())
    if role is Role.MEMBER:
        own = membership_table.c.member_id == ACTOR_MEMBER
        return and_(own, membership_table.c.program_id.in_(_merchant_programs())) if bound else own
    return false()


def readable_members(role: Role, bound: bool) -> ColumnElement[bool]:
    if role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if role is Role.MERCHANT:
        return exists(
            select(membership_table.c.id).where(
                membership_table.c.member_id == member_table.c.id,
                membership_table.c.program_id.in_(_merchant_programs()),
            )
        )
    if role is Role.MEMBER:
        return member_table.c.id == ACTOR_MEMBER
    return false()


def readable_postings(role: Role, bound: bool) -> ColumnElement[bool]:
    """Member-account postings the actor may see (system legs are never listed here)."""
    if role in (Role.OPERATOR, Role.AUDITOR):
        return true()
    if role is Role.MERCHANT:
        return posting_table.c.program_id.in_(_merchant_programs())
    if role is Role.MEMBER:
        own = posting_table.c.account_id.in_(_accounts_of(ACTOR_MEMBER))
        return and_(own, posting_table.c.program_id.in_(_merchant_programs())) if bound else own
    return false()


_members_by_id = Compiled(
    lambda role, bound: select(*_member_columns).where(
        member_table.c.id == any_(ids_param()), readable_members(role, bound)
    )
)
_memberships_by_id = Compiled(
    lambda role, bound: (
        select(*_membership_columns)
        .select_from(_memberships)
        .where(membership_table.c.id == any_(ids_param()), readable_memberships(role, bound))
    )
)
_membership_by_number = Compiled(
    lambda role, bound: (
        select(*_membership_columns)
        .select_from(_memberships)
        .where(
            membership_table.c.program_id == bindparam("program_id", type_=BigInteger),
            membership_table.c.member_number == bindparam("member_number"),
            readable_memberships(role, bound),
        )
    )
)


def _membership_pages(parent: str) -> Compiled:
    return Compiled(
        lambda role, bound, after: paged_by_parent(
            lambda parent_id: (
                select(*_membership_columns)
                .select_from(_memberships)
                .where(
                    membership_table.c[parent] == parent_id,
                    past_cursor(membership_table.c.id, after),
                    readable_memberships(role, bound),
                )
                .order_by(membership_table.c.id)
            )
        )
    )


_memberships_of_program = _membership_pages("program_id")
_memberships_of_member = _membership_pages("member_id")


def _newest(
    owner: ColumnElement[bool], role: Role, bound: bool, after: bool, filters: tuple[bool, ...]
) -> Select[Any]:
    """The ids of an owner's newest entries, from the history index alone (it carries
    account, program and time: an index-only scan, read backwards, stopped at the page)."""
    by_program, since, until = filters
    return (
        select(posting_table.c.id)
        .where(
            owner,
            posting_table.c.balance_after.is_not(None),
            readable_postings(role, bound),
            posting_table.c.program_id == bindparam("program_id", type_=BigInteger)
            if by_program
            else true(),
            posting_table.c.created_at >= bindparam("since", type_=DateTime(timezone=True))
            if since
            else true(),
            posting_table.c.created_at < bindparam("until", type_=DateTime(timezone=True))
            if until
            else true(),
            past_cursor(posting_table.c.id, after, descending=True),
        )
        .order_by(posting_table.c.id.desc())
        .limit(LIMIT)
    )


def _history_page(newest: Select[Any]) -> Any:
    """A page in two steps: the ids (`_newest`), then those rows. In one step PostgreSQL
    estimated that a member's postings of one account are a handful, so it read all of
    them and their transactions and sorted: 5–9 ms for 660 postings, growing with the
    history."""
    ids = newest.lateral("newest")
    return (
        select(
            *(_entry_table.c[c.name] if c.table is posting_table else c for c in _history_columns)
        )
        .select_from(
            ids.join(_entry_table, _entry_table.c.id == ids.c.id).join(
                transaction_table, transaction_table.c.id == _entry_table.c.transaction_id
            )
        )
        .order_by(_entry_table.c.id.desc())
    )


def _of_membership(membership_id: Any) -> ColumnElement[bool]:
    """Postings of the membership's account, found through its member's history index."""
    account = (
        select(account_table.c.id, account_table.c.member_id)
        .where(account_table.c.membership_id == membership_id)
        .correlate_except(account_table)
    )
    return and_(
        posting_table.c.member_id
        == account.with_only_columns(account_table.c.member_id).scalar_subquery(),
        posting_table.c.account_id
        == account.with_only_columns(account_table.c.id).scalar_subquery(),
    )


def _newest_of_member(
    member_id: Any, role: Role, bound: bool, after: bool, filters: tuple[bool, ...]
) -> Select[Any]:
    """A member's newest entries across its ledger members (several after merges): a
    page from each one's stretch of the history index, then the newest of those. With
    `member_id IN (…)` PostgreSQL read every entry of all of them and sorted."""
    ledger = (
        select(account_table.c.member_id)
        .select_from(_memberships)
        .where(membership_table.c.member_id == member_id)
        .correlate_except(membership_table, account_table)
        .distinct()
        .lateral("ledger")
    )
    each = _newest(
        and_(
            posting_table.c.member_id == ledger.c.member_id,
            posting_table.c.account_id.in_(_accounts_of(member_id)),
        ),
        role,
        bound,
        after,
        filters,
    ).lateral("each")
    return (
        select(each.c.id)
        .select_from(ledger.join(each, true()))
        .order_by(each.c.id.desc())
        .limit(LIMIT)
    )


# Newest first: posting ids grow with time, so they order the history.
_history_of_membership = Compiled(
    lambda role, bound, after, filters: paged_by_parent(
        lambda membership_id: _history_page(
            _newest(_of_membership(membership_id), role, bound, after, filters)
        )
    )
)
_history_of_member = Compiled(
    lambda role, bound, after, filters: paged_by_parent(
        lambda member_id: _history_page(_newest_of_member(member_id, role, bound, after, filters))
    )
)
_entries_by_id = Compiled(
    lambda role, bound: (
        select(*_history_columns)
        .select_from(_history)
        .where(
            posting_table.c.id == any_(ids_param()),
            posting_table.c.balance_after.is_not(None),
            readable_postings(role, bound),
        )
    )
)
_spendable = Compiled(
    lambda role, bound: (
        select(
            membership_table.c.id,
            account_table.c.held,
            select(func.coalesce(func.sum(lot_table.c.remaining), 0))
            .where(
                lot_table.c.account_id == account_table.c.id,
                lot_table.c.remaining > 0,
                lot_table.c.available_at <= func.now(),
                or_(lot_table.c.expires_at.is_(None), lot_table.c.expires_at > func.now()),
            )
            .scalar_subquery(),
        )
        .select_from(_memberships)
        .where(membership_table.c.id == any_(ids_param()), readable_memberships(role, bound))
    )
)


def _visible(query: Compiled) -> Callable[[Actor, Sequence[int]], Statement]:
    """The by-id statement of `query` under the actor's visibility rule."""

    def statement(actor: Actor, ids: Sequence[int]) -> Statement:
        return query.bind(*actor_variant(actor), ids=list(ids), **actor_params(actor))

    return statement


members_by_id: ByIds[MemberRecord] = ByIds(_visible(_members_by_id), lambda row: MemberRecord(*row))
memberships_by_id: ByIds[MembershipRecord] = ByIds(
    _visible(_memberships_by_id), lambda row: MembershipRecord(*row)
)


async def membership_by_number(
    db: Database, actor: Actor, *, program_id: int, member_number: str
) -> MembershipRecord | None:
    query = _membership_by_number.bind(
        *actor_variant(actor),
        program_id=program_id,
        member_number=member_number,
        **actor_params(actor),
    )
    row = await db.fetch_one(*query)
    return None if row is None else MembershipRecord(*row)


async def membership_pages_by_program(
    db: Database, actor: Actor, program_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[MembershipRecord]]:
    query = _memberships_of_program.bind(
        *actor_variant(actor), after is not None, after=after, **actor_params(actor)
    )
    return await fetch_pages_by_parent(db, query, program_ids, first, _membership)


async def membership_pages_by_member(
    db: Database, actor: Actor, member_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[MembershipRecord]]:
    query = _memberships_of_member.bind(
        *actor_variant(actor), after is not None, after=after, **actor_params(actor)
    )
    return await fetch_pages_by_parent(db, query, member_ids, first, _membership)


async def history_pages_by_membership(
    db: Database,
    actor: Actor,
    membership_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    filters: HistoryFilter,
) -> dict[int, Page[HistoryEntry]]:
    query = _history_of_membership.bind(
        *actor_variant(actor), after is not None, filters.variant,
        after=after, **filters.params(), **actor_params(actor),
    )  # fmt: skip
    return await fetch_pages_by_parent(db, query, membership_ids, first, _entry)


async def history_pages_by_member(
    db: Database,
    actor: Actor,
    member_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
    filters: HistoryFilter,
) -> dict[int, Page[HistoryEntry]]:
    query = _history_of_member.bind(
        *actor_variant(actor), after is not None, filters.variant,
        after=after, **filters.params(), **actor_params(actor),
    )  # fmt: skip
    return await fetch_pages_by_parent(db, query, member_ids, first, _entry)


async def entries_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, HistoryEntry]:
    """Member-account postings by id (system legs are not entries)."""
    query = _entries_by_id.bind(*actor_variant(actor), ids=list(ids), **actor_params(actor))
    return {row[0]: HistoryEntry(*row) for row in await db.read(*query)}


async def spendable_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int]
) -> dict[int, int]:
    """Points spendable now: available, unexpired lots minus holds (what a spend checks)."""
    query = _spendable.bind(*actor_variant(actor), ids=list(membership_ids), **actor_params(actor))
    return {row[0]: max(0, int(row[2]) - row[1]) for row in await db.read(*query)}


def _membership(row: Any) -> MembershipRecord:
    return MembershipRecord(*row)


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(*row)


@dataclass(frozen=True, slots=True)
class LotRecord:
    """Points of one earn still in the account: what expires when."""

    id: int
    amount: int
    remaining: int
    available_at: datetime
    expires_at: datetime | None
    created_at: datetime


_lot_columns = (
    lot_table.c.id,
    lot_table.c.amount,
    lot_table.c.remaining,
    lot_table.c.available_at,
    lot_table.c.expires_at,
    lot_table.c.created_at,
)
_lots_of_membership = Compiled(
    lambda role, bound, after: paged_by_parent(
        lambda membership_id: (
            select(*_lot_columns)
            .select_from(
                lot_table.join(account_table, account_table.c.id == lot_table.c.account_id)
            )
            .join(membership_table, membership_table.c.id == account_table.c.membership_id)
            .where(
                account_table.c.membership_id == membership_id,
                lot_table.c.remaining > 0,
                past_cursor(lot_table.c.id, after),
                readable_memberships(role, bound),
            )
            .order_by(lot_table.c.id)
        )
    )
)
_expiring = Compiled(
    lambda role, bound: (
        select(
            membership_table.c.id,
            select(func.coalesce(func.sum(lot_table.c.remaining), 0))
            .where(
                lot_table.c.account_id == account_table.c.id,
                lot_table.c.remaining > 0,
                lot_table.c.expires_at <= bindparam("until", type_=DateTime(timezone=True)),
            )
            .scalar_subquery(),
        )
        .select_from(_memberships)
        .where(membership_table.c.id == any_(ids_param()), readable_memberships(role, bound))
    )
)


async def lot_pages_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[LotRecord]]:
    """Lots with points left, oldest first."""
    query = _lots_of_membership.bind(
        *actor_variant(actor), after is not None, after=after, **actor_params(actor)
    )
    return await fetch_pages_by_parent(db, query, membership_ids, first, _lot)


async def expiring_by_membership(
    db: Database, actor: Actor, membership_ids: Sequence[int], *, until: datetime
) -> dict[int, int]:
    """Points that expire by `until` (those already due and not yet swept included)."""
    query = _expiring.bind(
        *actor_variant(actor), ids=list(membership_ids), until=until, **actor_params(actor)
    )
    return {row[0]: int(row[1]) for row in await db.read(*query)}


def _lot(row: Any) -> LotRecord:
    return LotRecord(*row)
