"""Privacy rights: export everything held about a member; erase (pseudonymise) them.

Erasure keeps the ledger whole: postings, lots, balances and their member ids stay (they
are the merchants' liabilities and the settlement trail); what identifies the person goes:
the display name, verified identifiers, pending verifications and their sealed codes in
the outbox, the merchants' member numbers (often a phone number in practice: replaced by
`erased-<membership id>`), segments, and the same strings wherever the audit trail
quoted them (redacted through the trail's one sanctioned change, see 0008_identity.sql).
Free text that merchants wrote into ledger reasons is theirs and immutable; it is not
scanned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import InvalidInput, NotFound, ObligationsUnsettled
from alliance.identity.delivery import TOPIC as CODE_TOPIC
from alliance.identity.identifiers import keyring
from alliance.identity.merge import lock_members
from alliance.identity.models import IdentifierKind
from alliance.identity.service import read_policy
from alliance.settlement.queries import SETTLED_OBLIGATION

EXPORT_FORMAT = "points-alliance/member-export/1"
REDACTED_KEYS = ["member_number", "display_name", "phone", "email", "identifier"]


@dataclass(frozen=True, slots=True)
class ObligationSource:
    """Where cross-merchant obligations on a member live, and which of them are settled.

    By default the settlement's own table, where an obligation is settled once its period
    is closed and the statements of both its parties are paid (SETTLED_OBLIGATION). With
    `settled` None, every obligation on the member counts as unsettled."""

    table: str = "settlement_obligation"
    member_column: str = "member_id"
    settled: str | None = SETTLED_OBLIGATION
    """An SQL condition on the table's row alias `o` that says an obligation is settled."""


OBLIGATIONS = ObligationSource()


async def unsettled_obligations(
    session: AsyncSession, member_ids: list[int], source: ObligationSource = OBLIGATIONS
) -> int:
    """How many cross-merchant obligations on these members are not settled yet."""
    exists = await session.scalar(text("SELECT to_regclass(:table)"), {"table": source.table})
    if exists is None:
        return 0
    settled = f" AND NOT ({source.settled})" if source.settled else ""
    count = await session.scalar(
        text(
            f'SELECT count(*) FROM "{source.table}" o'
            f' WHERE o."{source.member_column}" = ANY(:ids){settled}'
        ),
        {"ids": member_ids},
    )
    return int(count or 0)


def _subject(actor: Actor, member_id: int | None) -> int:
    """Whose data: a member token acts for itself only; the operator names the member."""
    actor.require(Role.MEMBER, Role.OPERATOR)
    if actor.role is Role.MEMBER:
        assert actor.member_id is not None
        if member_id is not None and member_id != actor.member_id:
            raise NotFound("member not found", field=("memberId",))
        return actor.member_id
    if member_id is None:
        raise InvalidInput("memberId is required", field=("memberId",))
    return member_id


async def _person(session: AsyncSession, member_id: int) -> list[int]:
    """The member and every member merged into it (at any depth)."""
    rows = await session.execute(
        text(
            "WITH RECURSIVE person AS (SELECT id FROM member WHERE id = :id"
            " UNION SELECT m.id FROM member m JOIN person ON m.merged_into_id = person.id)"
            " SELECT id FROM person ORDER BY id"
        ),
        {"id": member_id},
    )
    return [row[0] for row in rows]


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), params)
    return [_jsonable(dict(row._mapping)) for row in result]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bytes | memoryview):
            value = bytes(value).hex()
        elif value is not None and not isinstance(value, str | int | float | bool | list | dict):
            value = str(value)  # Decimal
        out[key] = value
    return out


async def export_member_data(
    db: Database, actor: Actor, *, member_id: int | None = None
) -> dict[str, Any]:
    """Everything held about the member, as one JSON document (the member, or the operator)."""
    subject = _subject(actor, member_id)
    keys = keyring(db.settings)
    async with db.transaction() as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        member = await _rows(
            session,
            "SELECT id, display_name, created_at, erased_at FROM member"
            " WHERE id = :id AND merged_into_id IS NULL",
            id=subject,
        )
        if not member:
            raise NotFound("member not found", field=("memberId",))
        ids = await _person(session, subject)
        identifiers = []
        for row in (
            await session.execute(
                text(
                    "SELECT kind, key_id, sealed, verified_at, created_at FROM member_identifier"
                    " WHERE member_id = ANY(:ids) ORDER BY id"
                ),
                {"ids": ids},
            )
        ).all():
            kind = IdentifierKind(row.kind)
            identifiers.append(
                {"kind": kind.value, "value": keys.open(kind, row.key_id, bytes(row.sealed)),
                 "verified_at": row.verified_at.isoformat(),
                 "created_at": row.created_at.isoformat()}
            )  # fmt: skip
        memberships = await _rows(
            session,
            "SELECT ms.id, ms.member_id, ms.program_id, p.name AS program_name,"
            " mc.id AS merchant_id, mc.name AS merchant_name, ms.member_number, ms.status,"
            " ms.segments, ms.created_at, a.id AS account_id, a.balance, a.held, a.debt,"
            " t.code AS tier_code, t.name AS tier_name"
            " FROM membership ms JOIN program p ON p.id = ms.program_id"
            " JOIN merchant mc ON mc.id = p.merchant_id"
            " JOIN account a ON a.membership_id = ms.id"
            " LEFT JOIN membership_tier mt ON mt.membership_id = ms.id"
            " LEFT JOIN tier t ON t.id = mt.tier_id"
            " WHERE ms.member_id = ANY(:ids) ORDER BY ms.id",
            ids=ids,
        )
        accounts = [m["account_id"] for m in memberships]
        document = {
            "format": EXPORT_FORMAT,
            "exported_at": datetime.now(UTC).isoformat(),
            "member": member[0] | {"merged_member_ids": [i for i in ids if i != subject]},
            "identifiers": identifiers,
            "memberships": memberships,
            "lots": await _rows(
                session,
                "SELECT l.id, a.membership_id, l.amount, l.remaining, l.available_at,"
                " l.expires_at, l.created_at FROM lot l JOIN account a ON a.id = l.account_id"
                " WHERE l.account_id = ANY(:accounts) ORDER BY l.id",
                accounts=accounts,
            ),
            "transactions": await _rows(
                session,
                "SELECT p.id AS entry_id, p.transaction_id, a.membership_id, p.program_id,"
                " t.kind, t.reason, p.amount AS points, p.balance_after, p.created_at"
                " FROM posting p JOIN ledger_transaction t ON t.id = p.transaction_id"
                " JOIN account a ON a.id = p.account_id"
                " WHERE p.account_id = ANY(:accounts) ORDER BY p.id",
                accounts=accounts,
            ),
            "holds": await _rows(
                session,
                "SELECT id, membership_id, kind, points, captured, status, reason, expires_at,"
                " created_at, closed_at FROM hold WHERE account_id = ANY(:accounts)"
                " ORDER BY id",
                accounts=accounts,
            ),
            "tier_history": await _rows(
                session,
                "SELECT c.id, c.membership_id, f.code AS from_tier, t.code AS to_tier, c.reason,"
                " c.created_at FROM tier_change c JOIN tier f ON f.id = c.from_tier_id"
                " JOIN tier t ON t.id = c.to_tier_id"
                " WHERE c.membership_id IN (SELECT id FROM membership WHERE member_id = ANY(:ids))"
                " ORDER BY c.id",
                ids=ids,
            ),
            "consents": await _rows(
                session,
                "SELECT c.merchant_id, mc.name AS merchant_name, c.purpose, c.granted_at,"
                " c.withdrawn_at FROM consent c JOIN merchant mc ON mc.id = c.merchant_id"
                " WHERE c.member_id = ANY(:ids) ORDER BY c.merchant_id, c.purpose",
                ids=ids,
            ),
            "verifications": await _rows(
                session,
                "SELECT v.id, v.membership_id, v.kind, v.attempts, v.created_at, v.expires_at,"
                " v.confirmed_at FROM verification v JOIN membership ms"
                " ON ms.id = v.membership_id WHERE ms.member_id = ANY(:ids) ORDER BY v.id",
                ids=ids,
            ),
            "merges": await _rows(
                session,
                "SELECT id, survivor_id, absorbed_id, initiated_by, reason, memberships_moved,"
                " accounts_folded, points_moved, created_at FROM member_merge"
                " WHERE survivor_id = ANY(:ids) OR absorbed_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "exchanges": await _rows(
                session,
                "SELECT id, from_membership_id, to_membership_id, rate_id, quote_id, points_in,"
                " fee, points_out, remainder, created_at FROM exchange"
                " WHERE member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "exchange_quotes": await _rows(
                session,
                "SELECT id, from_membership_id, to_membership_id, rate_id, points_in, fee,"
                " points_out, remainder, value, expires_at, created_at FROM exchange_quote"
                " WHERE member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "settlement_obligations": await _rows(
                session,
                "SELECT id, transaction_id, kind, debtor_merchant_id, creditor_merchant_id,"
                " program_id, points, point_value, amount, occurred_at FROM settlement_obligation"
                " WHERE member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "redemptions": await _rows(
                session,
                "SELECT id, reward_id, reward_version_id, program_id, membership_id, points,"
                " cash_price, status, expires_at, fulfilment, carrier, tracking_number,"
                " created_at, fulfilled_at, closed_at FROM redemption"
                " WHERE member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "gifts": await _rows(
                session,
                "SELECT id, program_id, from_membership_id, to_membership_id, points, message,"
                " created_at FROM gift WHERE from_membership_id = ANY(:memberships)"
                " OR to_membership_id = ANY(:memberships) ORDER BY id",
                memberships=[m["id"] for m in memberships],
            ),
            "adjustments": await _rows(
                session,
                "SELECT id, program_id, membership_id, direction, points, reason_code, note,"
                " status, created_at, decided_at, transaction_id FROM adjustment_request"
                " WHERE member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "appeals": await _rows(
                session,
                "SELECT a.id, a.program_id, a.membership_id, a.transaction_id, a.reason, a.body,"
                " a.status, a.resolution, a.created_at, a.closed_at,"
                " coalesce((SELECT jsonb_agg(jsonb_build_object('author', m.author_role,"
                " 'body', m.body, 'at', m.created_at) ORDER BY m.id) FROM appeal_message m"
                " WHERE m.appeal_id = a.id), '[]'::jsonb) AS messages"
                " FROM appeal a WHERE a.member_id = ANY(:ids) ORDER BY a.id",
                ids=ids,
            ),
            "unlinks": await _rows(
                session,
                "SELECT id, membership_id, from_member_id, to_member_id, reason, created_at"
                " FROM membership_unlink WHERE from_member_id = ANY(:ids)"
                " OR to_member_id = ANY(:ids) ORDER BY id",
                ids=ids,
            ),
            "audit": await _rows(
                session,
                "SELECT id, role, action, target, before, after, created_at FROM audit_record"
                " WHERE target = ANY(:targets) ORDER BY id",
                targets=_targets(ids, [m["id"] for m in memberships]),
            ),
        }
        await record_audit(session, actor, action="member.export", target=f"member:{subject}",
                           after={"memberships": len(memberships)})  # fmt: skip
    return document


def _targets(member_ids: list[int], membership_ids: list[int]) -> list[str]:
    return [f"member:{i}" for i in member_ids] + [f"membership:{i}" for i in membership_ids]


@dataclass(frozen=True, slots=True)
class Erasure:
    member_id: int
    erased_at: datetime
    memberships: int
    identifiers: int
    replayed: bool


async def erase_member(db: Database, actor: Actor, *, member_id: int | None = None) -> Erasure:
    """Pseudonymise the member (the member themself, or the operator); balances stay."""
    subject = _subject(actor, member_id)
    keys = keyring(db.settings)
    async with db.transaction() as session:
        members = await lock_members(session, [subject])
        row = members.get(subject)
        if row is None or row["merged_into_id"] is not None:
            raise NotFound("member not found", field=("memberId",))
        ids = await _person(session, subject)
        if row["erased_at"] is not None:
            return Erasure(subject, row["erased_at"], 0, 0, replayed=True)
        policy = await read_policy(session)
        if policy.erase_requires_settlement:
            open_obligations = await unsettled_obligations(session, ids, OBLIGATIONS)
            if open_obligations:
                raise ObligationsUnsettled(
                    f"{open_obligations} cross-merchant obligations on this member are not"
                    " settled yet; erase after settlement",
                    field=("memberId",),
                )
        # Every string that names the person, to redact where the audit trail quoted it.
        personal = [
            value
            for value in (
                await session.execute(
                    text(
                        "SELECT display_name FROM member WHERE id = ANY(:ids)"
                        " AND display_name IS NOT NULL"
                        " UNION SELECT member_number FROM membership WHERE member_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            ).scalars()
        ]
        for identifier in (
            await session.execute(
                text(
                    "SELECT kind, key_id, sealed FROM member_identifier WHERE member_id = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).all():
            personal.append(
                keys.open(IdentifierKind(identifier.kind), identifier.key_id,
                          bytes(identifier.sealed))
            )  # fmt: skip
        membership_ids = list(
            (
                await session.execute(
                    text("SELECT id FROM membership WHERE member_id = ANY(:ids) ORDER BY id"),
                    {"ids": ids},
                )
            ).scalars()
        )
        identifiers = (
            await session.execute(
                text("DELETE FROM member_identifier WHERE member_id = ANY(:ids)"), {"ids": ids}
            )
        ).rowcount  # type: ignore[attr-defined]
        verification_ids = list(
            (
                await session.execute(
                    text(
                        "DELETE FROM verification WHERE membership_id = ANY(:memberships)"
                        " RETURNING id::text"
                    ),
                    {"memberships": membership_ids},
                )
            ).scalars()
        )
        await session.execute(
            text(
                "DELETE FROM outbox_event WHERE topic = :topic"
                " AND payload ->> 'verification_id' = ANY(:ids)"
            ),
            {"topic": CODE_TOPIC, "ids": verification_ids},
        )
        for statement in (
            "UPDATE member SET display_name = NULL WHERE id = ANY(:ids)",
            "UPDATE member SET erased_at = now() WHERE id = ANY(:ids)",
            "UPDATE membership SET member_number = 'erased-' || id, segments = '{}'"
            " WHERE member_id = ANY(:ids)",
            "UPDATE consent SET withdrawn_at = coalesce(withdrawn_at, now())"
            " WHERE member_id = ANY(:ids)",
        ):
            await session.execute(text(statement), {"ids": ids})
        # The trail keeps who did what and when; the quoted personal strings go.
        await session.execute(text("SET LOCAL alliance.erasure = 'on'"))
        await _redact(
            session,
            text(
                "UPDATE audit_record SET"
                " redacted_at = now(), before = identity_redact(before, :keys, :values),"
                " after = identity_redact(after, :keys, :values)"
                " WHERE target = ANY(:targets) OR before::text LIKE ANY(:patterns)"
                " OR after::text LIKE ANY(:patterns)"
            ),
            {"keys": REDACTED_KEYS, "values": personal,
             "targets": _targets(ids, membership_ids),
             "patterns": [f"%{_like(v)}%" for v in personal]},
        )  # fmt: skip
        await session.execute(text("SET LOCAL alliance.erasure = 'off'"))
        erased_at = await session.scalar(
            text("SELECT erased_at FROM member WHERE id = :id"), {"id": subject}
        )
        await record_audit(session, actor, action="member.erase", target=f"member:{subject}",
                           after={"memberships": len(membership_ids),
                                  "identifiers": identifiers})  # fmt: skip
        await session.execute(
            text(
                "INSERT INTO outbox_event (topic, member_id, payload) VALUES ('member.erased',"
                " :id, jsonb_build_object('member_id', :id))"
            ),
            {"id": subject},
        )
    return Erasure(subject, erased_at, len(membership_ids), identifiers, replayed=False)


async def _redact(session: AsyncSession, statement: Any, params: dict[str, Any]) -> None:
    """Run the redaction; its parameters are the personal data being erased, so an error
    must not carry them into a log (SQLAlchemy errors quote their parameters)."""
    try:
        await session.execute(statement, params)
    except DBAPIError as error:
        raise RuntimeError(
            f"audit redaction failed: {type(error.orig).__name__} (parameters withheld)"
        ) from None


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def purge_verifications(db: Database) -> int:
    """Delete verifications (and their sealed codes) older than the retention period."""
    async with db.transaction() as session:
        policy = await read_policy(session)
        ids = list(
            (
                await session.execute(
                    text(
                        "DELETE FROM verification WHERE created_at < now()"
                        " - make_interval(days => :days) RETURNING id::text"
                    ),
                    {"days": policy.verification_retention_days},
                )
            ).scalars()
        )
        await session.execute(
            text(
                "DELETE FROM outbox_event WHERE topic = :topic"
                " AND (payload ->> 'verification_id' = ANY(:ids)"
                " OR created_at < now() - make_interval(days => :days))"
            ),
            {"topic": CODE_TOPIC, "ids": ids, "days": policy.verification_retention_days},
        )
    return len(ids)
