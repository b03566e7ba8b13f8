"""Reading merchants and programs.

The alliance directory (merchants, their programs, each program's point value)
is readable by every authenticated actor: members choose partner brands from
it and exchange rates are quoted against it. Liability figures are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.paging import Page, fetch_page, fetch_pages_by_parent
from alliance.ledger.models import Account
from alliance.programs.models import Merchant, Program

merchant_table = Merchant.__table__
program_table = Program.__table__


@dataclass(frozen=True, slots=True)
class MerchantRecord:
    id: int
    code: str
    name: str
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> MerchantRecord:
        return cls(row.id, row.code, row.name, row.status, row.created_at)


@dataclass(frozen=True, slots=True)
class ProgramRecord:
    id: int
    merchant_id: int
    code: str
    name: str
    unit_name: str
    point_value: Decimal
    currency: str
    expiry_policy: str
    expiry_value: int
    pending_days: int
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> ProgramRecord:
        return cls(
            row.id,
            row.merchant_id,
            row.code,
            row.name,
            row.unit_name,
            row.point_value,
            row.currency,
            row.expiry_policy,
            row.expiry_value,
            row.pending_days,
            row.status,
            row.created_at,
        )


_merchant_columns = [merchant_table.c[name] for name in MerchantRecord.__slots__]
_program_columns = [program_table.c[name] for name in ProgramRecord.__slots__]


async def list_merchants(
    conn: AsyncConnection, actor: Actor, *, first: int, after: int | None
) -> Page[MerchantRecord]:
    stmt = select(*_merchant_columns).order_by(merchant_table.c.id)
    if after is not None:
        stmt = stmt.where(merchant_table.c.id > after)
    return await fetch_page(conn, stmt, first, MerchantRecord.from_row)


async def merchants_by_id(
    conn: AsyncConnection, actor: Actor, ids: Sequence[int]
) -> dict[int, MerchantRecord]:
    rows = await conn.execute(select(*_merchant_columns).where(merchant_table.c.id.in_(ids)))
    return {row.id: MerchantRecord.from_row(row) for row in rows}


async def list_programs(
    conn: AsyncConnection,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    merchant_id: int | None = None,
) -> Page[ProgramRecord]:
    stmt = select(*_program_columns).order_by(program_table.c.id)
    if merchant_id is not None:
        stmt = stmt.where(program_table.c.merchant_id == merchant_id)
    if after is not None:
        stmt = stmt.where(program_table.c.id > after)
    return await fetch_page(conn, stmt, first, ProgramRecord.from_row)


async def programs_by_id(
    conn: AsyncConnection, actor: Actor, ids: Sequence[int]
) -> dict[int, ProgramRecord]:
    rows = await conn.execute(select(*_program_columns).where(program_table.c.id.in_(ids)))
    return {row.id: ProgramRecord.from_row(row) for row in rows}


async def program_pages_by_merchant(
    conn: AsyncConnection,
    actor: Actor,
    merchant_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
) -> dict[int, Page[ProgramRecord]]:
    def page(merchant_id: Any) -> Any:
        stmt = (
            select(*_program_columns)
            .where(program_table.c.merchant_id == merchant_id)
            .order_by(program_table.c.id)
        )
        return stmt if after is None else stmt.where(program_table.c.id > after)

    return await fetch_pages_by_parent(conn, merchant_ids, page, first, ProgramRecord.from_row)


async def outstanding_points_by_program(
    conn: AsyncConnection, actor: Actor, program_ids: Sequence[int]
) -> dict[int, int | None]:
    """Points held by members per program (the liability is this × point_value).

    None for another merchant's program when the actor is bound to one merchant.
    """
    actor.require(Role.OPERATOR, Role.AUDITOR, Role.FINANCE, Role.MERCHANT)
    account = Account.__table__
    member_accounts = and_(account.c.program_id == program_table.c.id, account.c.kind == "member")
    stmt = (
        select(
            program_table.c.id,
            program_table.c.merchant_id,
            func.coalesce(func.sum(account.c.balance), 0).label("points"),
        )
        .select_from(program_table.outerjoin(account, member_accounts))
        .where(program_table.c.id.in_(program_ids))
        .group_by(program_table.c.id)
    )
    if not actor.is_alliance_wide:
        stmt = stmt.where(program_table.c.merchant_id == actor.merchant_id)
    totals = {row.id: int(row.points) for row in await conn.execute(stmt)}
    return {program_id: totals.get(program_id) for program_id in program_ids}
