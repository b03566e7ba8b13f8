"""Reading earning rules (public program information, like the program itself) and the
breakdowns stored with earns (visible with the entry they explain)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, select
from sqlalchemy.dialects.postgresql import distinct_on

from alliance.auth.actor import Actor
from alliance.db.compiled import Compiled
from alliance.db.engine import Database
from alliance.db.paging import Page, fetch_pages_by_parent, ids_param, paged_by_parent, past_cursor
from alliance.ledger.models import LedgerTransaction
from alliance.rules.models import EarningRule
from alliance.rules.service import RuleRecord

rule_table = EarningRule.__table__
_rule_columns = [rule_table.c[name] for name in RuleRecord.__slots__]


def _latest_versions() -> Any:
    """The newest version of each rule code (scheduled, in force, or disabled)."""
    return (
        select(*_rule_columns)
        .ext(distinct_on(rule_table.c.program_id, rule_table.c.code))
        .order_by(rule_table.c.program_id, rule_table.c.code, rule_table.c.version.desc())
        .subquery("latest")
    )


def _pages(after: bool) -> Any:
    latest = _latest_versions()
    return paged_by_parent(
        lambda program_id: (
            select(*[latest.c[name] for name in RuleRecord.__slots__])
            .where(latest.c.program_id == program_id, past_cursor(latest.c.id, after))
            .order_by(latest.c.id)
        )
    )


_rules_of_program = Compiled(_pages)
_rules_by_id = Compiled(lambda: select(*_rule_columns).where(rule_table.c.id == any_(ids_param())))
_details = Compiled(
    lambda: select(LedgerTransaction.id, LedgerTransaction.details).where(
        LedgerTransaction.id == any_(ids_param()),
        LedgerTransaction.details.is_not(None),
    )
)


async def rule_pages_by_program(
    db: Database, actor: Actor, program_ids: Sequence[int], *, first: int, after: int | None
) -> dict[int, Page[RuleRecord]]:
    query = _rules_of_program.bind(after is not None, after=after)
    return await fetch_pages_by_parent(db, query, program_ids, first, _rule)


async def rules_by_id(db: Database, actor: Actor, ids: Sequence[int]) -> dict[int, RuleRecord]:
    rows = await db.fetch_all(*_rules_by_id.bind(ids=list(ids)))
    return {row[0]: RuleRecord(*row) for row in rows}


async def details_by_transaction(
    db: Database, actor: Actor, transaction_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """Stored earn breakdowns. Callers reach these only through entries the actor may see."""
    rows = await db.fetch_all(*_details.bind(ids=list(transaction_ids)))
    return {row[0]: row[1] for row in rows}


def _rule(row: Any) -> RuleRecord:
    return RuleRecord(*row)
