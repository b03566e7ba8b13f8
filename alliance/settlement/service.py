"""The statement lifecycle: draft → issued → confirmed or disputed → paid.

The clearing house (operator, alliance finance) issues statements, re-issues a
disputed one once resolved, and records payments; each party's finance team confirms
or disputes its own statement. Every step is a conditional update on the expected
state (so two clicks never both win) and an audit record, in one transaction.
"""

from __future__ import annotations

from sqlalchemy import select, text, update

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, InvalidTransition, NotFound
from alliance.settlement.models import SettlementStatement, StatementStatus
from alliance.settlement.queries import StatementRecord, statements_by_id
from alliance.settlement.run import require_clearing_house
from alliance.validation import clean_text


async def issue_statement(db: Database, actor: Actor, *, statement_id: int) -> StatementRecord:
    require_clearing_house(actor)
    return await _step(
        db, actor, statement_id, "issue", StatementStatus.DRAFT, StatementStatus.ISSUED
    )


async def reissue_statement(
    db: Database, actor: Actor, *, statement_id: int, note: str
) -> StatementRecord:
    """A disputed statement, its dispute resolved (corrections go to the next period)."""
    require_clearing_house(actor)
    note = clean_text(note, "note", max_length=1000)
    return await _step(
        db,
        actor,
        statement_id,
        "reissue",
        StatementStatus.DISPUTED,
        StatementStatus.ISSUED,
        note=note,
    )


async def confirm_statement(db: Database, actor: Actor, *, statement_id: int) -> StatementRecord:
    _require_party_finance(actor)
    return await _step(
        db, actor, statement_id, "confirm", StatementStatus.ISSUED, StatementStatus.CONFIRMED
    )


async def dispute_statement(
    db: Database, actor: Actor, *, statement_id: int, reason: str
) -> StatementRecord:
    _require_party_finance(actor)
    reason = clean_text(reason, "reason", max_length=1000)
    return await _step(
        db,
        actor,
        statement_id,
        "dispute",
        StatementStatus.ISSUED,
        StatementStatus.DISPUTED,
        dispute_reason=reason,
    )


async def mark_statement_paid(
    db: Database, actor: Actor, *, statement_id: int, payment_reference: str
) -> StatementRecord:
    require_clearing_house(actor)
    reference = clean_text(payment_reference, "paymentReference", max_length=200)
    return await _step(
        db,
        actor,
        statement_id,
        "pay",
        StatementStatus.CONFIRMED,
        StatementStatus.PAID,
        payment_reference=reference,
    )


def _require_party_finance(actor: Actor) -> None:
    """Confirming or disputing is the party's finance team's word: a merchant-bound
    finance client for a merchant's statement, alliance finance for the alliance's."""
    actor.require(Role.FINANCE)


async def _step(
    db: Database,
    actor: Actor,
    statement_id: int,
    action: str,
    source: StatementStatus,
    target: StatementStatus,
    *,
    note: str | None = None,
    dispute_reason: str | None = None,
    payment_reference: str | None = None,
) -> StatementRecord:
    async with db.transaction() as session:
        current = (
            await session.execute(
                select(SettlementStatement.status, SettlementStatement.merchant_id)
                .where(SettlementStatement.id == statement_id)
                .with_for_update()
            )
        ).first()
        visible = current is not None and (
            actor.is_alliance_wide or current.merchant_id == actor.merchant_id
        )
        if not visible:
            raise NotFound("statement not found", field=("statementId",))
        assert current is not None
        if action in ("confirm", "dispute") and (
            (current.merchant_id is None) != actor.is_alliance_wide
        ):
            raise Forbidden("only the statement's own party confirms or disputes it")
        if current.status != source:
            raise InvalidTransition(
                f"cannot {action} a statement that is {current.status} (it must be {source})",
                field=("statementId",),
            )
        values: dict[str, object] = {"status": target.value, "updated_at": text("now()")}
        if dispute_reason is not None or target is StatementStatus.ISSUED:
            values["dispute_reason"] = dispute_reason
        if payment_reference is not None:
            values["payment_reference"] = payment_reference
        await session.execute(
            update(SettlementStatement).where(SettlementStatement.id == statement_id).values(values)
        )
        after: dict[str, object] = {"status": target.value}
        for key, value in (
            ("note", note),
            ("dispute_reason", dispute_reason),
            ("payment_reference", payment_reference),
        ):
            if value is not None:
                after[key] = value
        await record_audit(
            session,
            actor,
            action=f"statement.{action}",
            target=f"settlement_statement:{statement_id}",
            before={"status": current.status},
            after=after,
        )
        if target is StatementStatus.ISSUED:
            await session.execute(
                text(
                    "INSERT INTO outbox_event (topic, merchant_id, payload) VALUES"
                    " ('statement.issued', :merchant, jsonb_build_object('statement_id',"
                    " CAST(:statement AS bigint), 'reissued', CAST(:reissued AS boolean)))"
                ),
                {"merchant": current.merchant_id, "statement": statement_id,
                 "reissued": action == "reissue"},
            )  # fmt: skip
    return (await statements_by_id(db, actor, [statement_id]))[statement_id]
