"""Reading merchants and programs.

The alliance directory (merchants, their programs, each program's point value)
is readable by every authenticated actor: members choose partner brands from
it and exchange rates are quoted against it. Liability figures are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, any_, bindparam, func, select, true

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.by_ids import ByIds
from alliance.db.compiled import ACTOR_MERCHANT, Compiled, actor_params
from alliance.db.engine import Database
from alliance.db.paging import (
    Page,
    fetch_page,
    fetch_pages_by_parent,
    ids_param,
    paged,
    paged_by_parent,
    past_cursor,
)
from alliance.ledger.models import Account
from alliance.programs.models import Merchant, Program

merchant_table = Merchant.__table__
program_table = Program.__table__
account_table = Account.__table__


@dataclass(frozen=True, slots=True)
class MerchantRecord:
    id: int
    code: str
    name: str
    status: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> MerchantRecord:
        return cls(*row)

    @classmethod
    def from_model(cls, model: Merchant) -> MerchantRecord:
        return cls(*(getattr(model, field.name) for field in fields(cls)))


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
    promotion_stacking: str
    clawback_policy: str
    earn_caps: list[dict[str, Any]]
    discount_max_share: Decimal
    discount_min_points: int

    @classmethod
    def from_row(cls, row: Any) -> ProgramRecord:
        return cls(*row)

    @classmethod
    def from_model(cls, model: Program) -> ProgramRecord:
        return cls(*(getattr(model, field.name) for field in fields(cls)))


_merchant_columns = [merchant_table.c[field.name] for field in fields(MerchantRecord)]
_program_columns = [program_table.c[field.name] for field in fields(ProgramRecord)]


MERCHANT = bindparam("merchant_id", type_=BigInteger)

_merchant_list = Compiled(
    lambda after: paged(
        select(*_merchant_columns)
        .where(past_cursor(merchant_table.c.id, after))
        .order_by(merchant_table.c.id)
    )
)
_merchants_by_id = Compiled(
    lambda: select(*_merchant_columns).where(merchant_table.c.id == any_(ids_param()))
)
_program_list = Compiled(
    lambda after, by_merchant: paged(
        select(*_program_columns)
        .where(
            past_cursor(program_table.c.id, after),
            program_table.c.merchant_id == MERCHANT if by_merchant else true(),
        )
        .order_by(program_table.c.id)
    )
)
_programs_by_id = Compiled(
    lambda: select(*_program_columns).where(program_table.c.id == any_(ids_param()))
)
_program_pages = Compiled(
    lambda after: paged_by_parent(
        lambda merchant_id: (
            select(*_program_columns)
            .where(
                program_table.c.merchant_id == merchant_id, past_cursor(program_table.c.id, after)
            )
            .order_by(program_table.c.id)
        )
    )
)


async def list_merchants(
    db: Database, actor: Actor, *, first: int, after: int | None
) -> Page[MerchantRecord]:
    query = _merchant_list.bind(after is not None, after=after)
    return await fetch_page(db, query, first, MerchantRecord.from_row)


merchants_by_id: ByIds[MerchantRecord] = ByIds(
    lambda actor, ids: _merchants_by_id.bind(ids=list(ids)), MerchantRecord.from_row
)


async def list_programs(
    db: Database,
    actor: Actor,
    *,
    first: int,
    after: int | None,
    merchant_id: int | None = None,
) -> Page[ProgramRecord]:
    query = _program_list.bind(
        after is not None, merchant_id is not None, after=after, merchant_id=merchant_id
    )
    return await fetch_page(db, query, first, ProgramRecord.from_row)


programs_by_id: ByIds[ProgramRecord] = ByIds(
    lambda actor, ids: _programs_by_id.bind(ids=list(ids)), ProgramRecord.from_row
)


async def program_pages_by_merchant(
    db: Database,
    actor: Actor,
    merchant_ids: Sequence[int],
    *,
    first: int,
    after: int | None,
) -> dict[int, Page[ProgramRecord]]:
    query = _program_pages.bind(after is not None, after=after)
    return await fetch_pages_by_parent(db, query, merchant_ids, first, ProgramRecord.from_row)


_outstanding = Compiled(
    lambda alliance_wide: (
        select(
            program_table.c.id,
            func.coalesce(func.sum(account_table.c.balance), 0),
        )
        .select_from(
            program_table.outerjoin(
                account_table,
                and_(
                    account_table.c.program_id == program_table.c.id,
                    account_table.c.kind == "member",
                ),
            )
        )
        .where(
            program_table.c.id == any_(ids_param()),
            true() if alliance_wide else program_table.c.merchant_id == ACTOR_MERCHANT,
        )
        .group_by(program_table.c.id)
    )
)


async def outstanding_points_by_program(
    db: Database, actor: Actor, program_ids: Sequence[int]
) -> dict[int, int | None]:
    """Points held by members per program (the liability is this × point_value).

    None for another merchant's program when the actor is bound to one merchant.
    """
    actor.require(Role.OPERATOR, Role.AUDITOR, Role.FINANCE, Role.MERCHANT)
    query = _outstanding.bind(actor.is_alliance_wide, ids=list(program_ids), **actor_params(actor))
    totals = {row[0]: int(row[1]) for row in await db.read(*query)}
    return {program_id: totals.get(program_id) for program_id in program_ids}
