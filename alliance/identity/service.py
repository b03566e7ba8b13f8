"""Linking memberships to members through verified identifiers; consents; the policy.

- `start_verification`: the merchant (for its membership) or the member (for the
  membership their token is bound to) names a phone or e-mail; a 6-digit code is sent
  through the kind's delivery channel. Rate limits are counted in the database, per
  identifier and per client, under a transaction-scoped advisory lock per identifier.
- `confirm_verification`: the code is checked against its keyed digest; each attempt is
  counted (and committed) before the comparison, so guesses are bounded by the policy's
  `max_attempts` per code and `per_identifier_per_hour` codes. A right code links: the
  identifier is recorded for the membership's member, or, when it already belongs to
  another member, the membership's member is merged into that member (the person has
  proved both are theirs). Two merchants linking one phone at once end with one member:
  the identifier's digest is unique, and the loser of the race merges into the winner.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.paging import Page
from alliance.errors import InvalidInput, NotFound, RateLimited, VerificationFailed
from alliance.identity import delivery
from alliance.identity.identifiers import keyring, mask, normalise
from alliance.identity.merge import MergeResult, merge_in_session
from alliance.identity.models import ConsentPurpose, IdentifierKind
from alliance.ledger.service import request_fingerprint

CODE_DIGITS = 6


@dataclass(frozen=True, slots=True)
class Policy:
    code_ttl_seconds: int = 600
    max_attempts: int = 5
    per_identifier_per_hour: int = 5
    per_client_per_hour: int = 200
    verification_retention_days: int = 30
    erase_requires_settlement: bool = True
    updated_at: datetime | None = None


_POLICY_COLUMNS = ", ".join(f.name for f in fields(Policy))


async def read_policy(session: AsyncSession) -> Policy:
    row = (await session.execute(text(f"SELECT {_POLICY_COLUMNS} FROM privacy_policy"))).first()
    return Policy() if row is None else Policy(*row)


async def get_privacy_policy(db: Database, actor: Actor) -> Policy:
    actor.require(Role.OPERATOR, Role.AUDITOR)
    async with db.transaction() as session:
        return await read_policy(session)


async def set_privacy_policy(db: Database, actor: Actor, **changes: Any) -> Policy:
    """Change some settings (operator); the rest keep their values. Audited."""
    actor.require(Role.OPERATOR)
    allowed = {f.name for f in fields(Policy)} - {"updated_at"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"unknown settings: {', '.join(sorted(unknown))}")
    limits = {
        "code_ttl_seconds": (60, 3600), "max_attempts": (1, 10),
        "per_identifier_per_hour": (1, 100), "per_client_per_hour": (1, 100_000),
        "verification_retention_days": (1, 3650),
    }  # fmt: skip
    for name, value in changes.items():
        if name in limits and not limits[name][0] <= value <= limits[name][1]:
            low, high = limits[name]
            raise InvalidInput(f"{name} must be between {low} and {high}", field=(name,))
    async with db.transaction() as session:
        await session.execute(text("LOCK TABLE privacy_policy IN SHARE ROW EXCLUSIVE MODE"))
        before = await read_policy(session)
        after = Policy(**{f.name: changes.get(f.name, getattr(before, f.name))
                          for f in fields(Policy) if f.name != "updated_at"})  # fmt: skip
        values = {f.name: getattr(after, f.name) for f in fields(Policy) if f.name != "updated_at"}
        columns = ", ".join(values)
        await session.execute(
            text(
                f"INSERT INTO privacy_policy (id, {columns}, updated_at)"
                f" VALUES (1, {', '.join(':' + c for c in values)}, now())"
                " ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in values)
                + ", updated_at = now()"
            ),
            values,
        )
        await record_audit(session, actor, action="privacy.policy", target="privacy_policy",
                           before=_policy_json(before), after=_policy_json(after))  # fmt: skip
        return await read_policy(session)


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {f.name: getattr(policy, f.name) for f in fields(Policy) if f.name != "updated_at"}


# ---------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class VerificationRecord:
    id: int
    membership_id: int
    kind: IdentifierKind
    masked: str
    """The identifier as it may be shown: `+86138****5678`."""
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LinkResult:
    membership_id: int
    member_id: int
    """The member the membership belongs to now."""
    merge: MergeResult | None
    """When the identifier already belonged to another member: the merge into them."""


async def _membership_for(
    session: AsyncSession, actor: Actor, membership_id: int
) -> tuple[int, int]:
    """(member id, merchant id) of a membership the actor may link; NotFound otherwise."""
    row = (
        await session.execute(
            text(
                "SELECT m.member_id, p.merchant_id, m.status FROM membership m"
                " JOIN program p ON p.id = m.program_id JOIN member r ON r.id = m.member_id"
                " WHERE m.id = :id AND r.erased_at IS NULL AND r.merged_into_id IS NULL"
            ),
            {"id": membership_id},
        )
    ).first()
    if row is None or row.merchant_id != actor.merchant_id:
        raise NotFound("membership not found", field=("membershipId",))
    if actor.role is Role.MEMBER and row.member_id != actor.member_id:
        raise NotFound("membership not found", field=("membershipId",))
    if row.status != "active":
        raise NotFound("membership not found", field=("membershipId",))
    return int(row.member_id), int(row.merchant_id)


async def start_verification(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    kind: IdentifierKind,
    identifier: str,
) -> VerificationRecord:
    """Send a one-time code to the identifier, to link the membership through it."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    if len(identifier) > 320:
        raise InvalidInput("identifier is too long", field=(kind.value,))
    normalised = normalise(kind, identifier)
    keys = keyring(db.settings)
    digest = keys.digest(kind, normalised)
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    salt = secrets.token_bytes(16)
    async with db.transaction() as session:
        member_id, merchant_id = await _membership_for(session, actor, membership_id)
        policy = await read_policy(session)
        # Counted under a lock per identifier (and per client): concurrent starts queue
        # here, so the limit holds exactly, whatever arrives at once.
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtextextended('identity:' || who, 0))"
                " FROM unnest(CAST(:whos AS text[])) AS who ORDER BY who"
            ),
            {"whos": sorted([digest.hex(), "client:" + actor.client_id])},
        )
        counts = (
            await session.execute(
                text(
                    "SELECT count(*) FILTER (WHERE digest = ANY(:digests)),"
                    " count(*) FILTER (WHERE client_id = :client)"
                    " FROM verification WHERE created_at > now() - interval '1 hour'"
                    " AND (digest = ANY(:digests) OR client_id = :client)"
                ),
                {"digests": keys.digests(kind, normalised), "client": actor.client_id},
            )
        ).one()
        if counts[0] >= policy.per_identifier_per_hour:
            raise RateLimited("too many codes sent to this identifier; try again later",
                              field=(kind.value,))  # fmt: skip
        if counts[1] >= policy.per_client_per_hour:
            raise RateLimited("too many verifications from this client; try again later")
        row = (
            await session.execute(
                text(
                    "INSERT INTO verification (membership_id, client_id, actor_member_id, kind,"
                    " digest, key_id, sealed, code_salt, code_digest, max_attempts, expires_at)"
                    " VALUES (:membership, :client, :actor_member, :kind, :digest, :key_id,"
                    " :sealed, :salt, :code_digest, :max_attempts,"
                    " now() + make_interval(secs => :ttl)) RETURNING id, expires_at"
                ),
                {
                    "membership": membership_id,
                    "client": actor.client_id,
                    "actor_member": actor.member_id if actor.role is Role.MEMBER else None,
                    "kind": kind.value,
                    "digest": digest,
                    "key_id": keys.current.key_id,
                    "sealed": keys.seal(kind, normalised),
                    "salt": salt,
                    "code_digest": keys.code_digest(salt, code),
                    "max_attempts": policy.max_attempts,
                    "ttl": policy.code_ttl_seconds,
                },
            )
        ).one()
        await delivery.channel(kind).deliver(
            session,
            keys,
            delivery.CodeMessage(
                row.id, kind, normalised, code, row.expires_at, merchant_id, member_id
            ),
        )
        await record_audit(
            session, actor, action="identity.verification.start",
            target=f"membership:{membership_id}",
            after={"verification_id": row.id, "kind": kind.value},
        )  # fmt: skip
        return VerificationRecord(row.id, membership_id, kind, mask(kind, normalised),
                                  row.expires_at)  # fmt: skip


async def confirm_verification(
    db: Database, actor: Actor, *, verification_id: int, code: str
) -> LinkResult:
    """Check the code; a right one links the membership through the identifier."""
    actor.require(Role.MERCHANT, Role.MEMBER)
    keys = keyring(db.settings)
    failed = VerificationFailed("the code is wrong or has expired", field=("code",))
    owner = actor.member_id if actor.role is Role.MEMBER else None
    # 1. Count the attempt, committed whatever the comparison says.
    async with db.transaction() as session:
        row = (
            await session.execute(
                text(
                    "UPDATE verification SET attempts = attempts + 1"
                    " WHERE id = :id AND client_id = :client"
                    " AND actor_member_id IS NOT DISTINCT FROM :owner"
                    " AND confirmed_at IS NULL AND sealed IS NOT NULL"
                    " AND attempts < max_attempts AND expires_at > now()"
                    " RETURNING code_salt, code_digest, key_id"
                ),
                {"id": verification_id, "client": actor.client_id, "owner": owner},
            )
        ).first()
    if row is None or len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise failed
    digest = keys.code_digest(bytes(row.code_salt), code, keys.key(row.key_id))
    if not secrets.compare_digest(digest, bytes(row.code_digest)):
        raise failed
    # 2. Settle the verification and link, in one transaction.
    async with db.transaction() as session:
        found = (
            await session.execute(
                text(
                    "WITH settled AS (SELECT id, membership_id, kind, digest, key_id, sealed"
                    "   FROM verification WHERE id = :id AND confirmed_at IS NULL"
                    "   AND sealed IS NOT NULL FOR UPDATE)"
                    " UPDATE verification v SET confirmed_at = now(), sealed = NULL"
                    " FROM settled WHERE v.id = settled.id"
                    " RETURNING settled.membership_id, settled.kind, settled.digest,"
                    " settled.key_id, settled.sealed"
                ),
                {"id": verification_id},
            )
        ).first()
        if found is None:
            raise failed  # a concurrent confirmation of the same code got there first
        member_id, _merchant = await _membership_for(session, actor, found.membership_id)
        kind = IdentifierKind(found.kind)
        normalised = keys.open(kind, found.key_id, bytes(found.sealed))
        digests = keys.digests(kind, normalised)
        holder = await session.scalar(
            text("SELECT member_id FROM member_identifier WHERE digest = ANY(:digests)"),
            {"digests": digests},
        )
        if holder is None:
            inserted = await session.scalar(
                text(
                    "INSERT INTO member_identifier (member_id, kind, digest, key_id, sealed,"
                    " verified_at) VALUES (:member, :kind, :digest, :key_id, :sealed, now())"
                    " ON CONFLICT (digest) DO NOTHING RETURNING member_id"
                ),
                {"member": member_id, "kind": kind.value, "digest": keys.digest(kind, normalised),
                 "key_id": keys.current.key_id, "sealed": keys.seal(kind, normalised)},
            )  # fmt: skip
            # Lost a race: another merchant linked this identifier and committed meanwhile.
            holder = inserted if inserted is not None else await session.scalar(
                text("SELECT member_id FROM member_identifier WHERE digest = ANY(:digests)"),
                {"digests": digests},
            )  # fmt: skip
        assert holder is not None
        holder = int(holder)
        merge = None
        if holder != member_id:
            merge = await merge_in_session(
                session, actor, survivor_id=holder, absorbed_id=member_id,
                initiated_by="verification", reason="linked by a verified identifier",
                scope="system:verification", key=f"verification:{verification_id}",
                fingerprint=request_fingerprint("link", verification=verification_id),
            )  # fmt: skip
        else:
            await session.execute(
                text(
                    "UPDATE member_identifier SET verified_at = now() WHERE digest = ANY(:digests)"
                ),
                {"digests": digests},
            )
        await record_audit(
            session, actor, action="identity.link", target=f"membership:{found.membership_id}",
            after={"verification_id": verification_id, "kind": kind.value, "member_id": holder,
                   "merge_id": None if merge is None else merge.merge_id},
        )  # fmt: skip
        return LinkResult(found.membership_id, holder, merge)


# ---------------------------------------------------------------- consent


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    member_id: int
    merchant_id: int
    purpose: ConsentPurpose
    granted_at: datetime
    withdrawn_at: datetime | None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None


async def set_consent(
    db: Database,
    actor: Actor,
    *,
    merchant_id: int,
    purpose: ConsentPurpose,
    granted: bool,
) -> ConsentRecord:
    """The member grants or withdraws one merchant's use of their data for one purpose.

    Takes effect for the next request: every read of alliance-wide data checks consents in
    the same statement as the data (nothing is cached)."""
    actor.require(Role.MEMBER)
    assert actor.member_id is not None
    async with db.transaction() as session:
        exists = await session.scalar(
            text("SELECT 1 FROM merchant WHERE id = :id"), {"id": merchant_id}
        )
        if exists is None:
            raise NotFound("merchant not found", field=("merchantId",))
        params = {"member": actor.member_id, "merchant": merchant_id, "purpose": purpose.value}
        if granted:
            statement = (
                "INSERT INTO consent (member_id, merchant_id, purpose, granted_at)"
                " VALUES (:member, :merchant, :purpose, now())"
                " ON CONFLICT (member_id, merchant_id, purpose) DO UPDATE"
                " SET granted_at = CASE WHEN consent.withdrawn_at IS NULL"
                " THEN consent.granted_at ELSE now() END, withdrawn_at = NULL"
            )
        else:
            statement = (
                "UPDATE consent SET withdrawn_at = coalesce(withdrawn_at, now())"
                " WHERE member_id = :member AND merchant_id = :merchant AND purpose = :purpose"
            )
        await session.execute(text(statement), params)
        row = (
            await session.execute(
                text(
                    "SELECT member_id, merchant_id, purpose, granted_at, withdrawn_at"
                    " FROM consent WHERE member_id = :member AND merchant_id = :merchant"
                    " AND purpose = :purpose"
                ),
                params,
            )
        ).first()
        await record_audit(
            session, actor, action="consent.grant" if granted else "consent.withdraw",
            target=f"member:{actor.member_id}",
            after={"merchant_id": merchant_id, "purpose": purpose.value},
        )  # fmt: skip
    if row is None:  # withdrawing what was never granted: nothing to withdraw
        now = datetime.now(UTC)
        return ConsentRecord(actor.member_id, merchant_id, purpose, now, now)
    return ConsentRecord(row[0], row[1], ConsentPurpose(row[2]), row[3], row[4])


_PURPOSE_RANK = {purpose: n for n, purpose in enumerate(ConsentPurpose)}


def consent_key(record: ConsentRecord) -> int:
    """The keyset cursor of a consent: (merchant, purpose) as one number."""
    return record.merchant_id * len(_PURPOSE_RANK) + _PURPOSE_RANK[record.purpose]


async def list_consents(
    db: Database,
    actor: Actor,
    *,
    member_id: int | None,
    first: int,
    after: int | None,
) -> Page[ConsentRecord]:
    """A member's consents: the member (their own), the operator and auditors (anyone's),
    a merchant (those given to it, by members it has a membership of)."""
    actor.require(Role.OPERATOR, Role.AUDITOR, Role.MERCHANT, Role.MEMBER)
    if actor.role is Role.MEMBER:
        if member_id is not None and member_id != actor.member_id:
            return Page([], False)  # another member's: as if there were none
        member_id = actor.member_id
    if member_id is None:
        raise InvalidInput("memberId is required", field=("memberId",))
    rank = " ".join(f"WHEN '{p.value}' THEN {n}" for p, n in _PURPOSE_RANK.items())
    key = f"c.merchant_id * {len(_PURPOSE_RANK)} + CASE c.purpose {rank} END"
    async with db.transaction() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT c.member_id, c.merchant_id, c.purpose, c.granted_at, c.withdrawn_at"
                    " FROM consent c WHERE c.member_id = :member"
                    " AND (NOT :merchant_only OR (c.merchant_id = :merchant AND EXISTS ("
                    "   SELECT 1 FROM membership m JOIN program p ON p.id = m.program_id"
                    "   WHERE m.member_id = c.member_id AND p.merchant_id = :merchant)))"
                    f" AND (CAST(:after AS bigint) IS NULL OR {key} > :after)"
                    f" ORDER BY {key} LIMIT :limit"
                ),
                {
                    "member": member_id,
                    "merchant_only": actor.role is Role.MERCHANT,
                    "merchant": actor.merchant_id,
                    "after": after,
                    "limit": first + 1,
                },
            )
        ).all()
    return Page.from_rows(
        rows, first, lambda r: ConsentRecord(r[0], r[1], ConsentPurpose(r[2]), r[3], r[4])
    )


async def rekey_identifiers(db: Database, *, batch_size: int = 500) -> int:
    """Re-seal and re-digest every identifier made under an older identity key with the
    current one (after a rotation; then the old key can leave ALLIANCE_IDENTITY_KEYS).
    Pending verifications keep their key until they settle. Returns how many changed."""
    keys = keyring(db.settings)
    current = keys.current.key_id
    changed = 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT id, kind, key_id, sealed FROM member_identifier"
                        " WHERE key_id <> :current ORDER BY id LIMIT :limit"
                        " FOR UPDATE SKIP LOCKED"
                    ),
                    {"current": current, "limit": batch_size},
                )
            ).all()
            for row in rows:
                kind = IdentifierKind(row.kind)
                normalised = keys.open(kind, row.key_id, bytes(row.sealed))
                await session.execute(
                    text(
                        "UPDATE member_identifier SET digest = :digest, key_id = :key_id,"
                        " sealed = :sealed WHERE id = :id"
                    ),
                    {"digest": keys.digest(kind, normalised), "key_id": current,
                     "sealed": keys.seal(kind, normalised), "id": row.id},
                )  # fmt: skip
        changed += len(rows)
        if len(rows) < batch_size:
            return changed


@dataclass(frozen=True, slots=True)
class IdentifierRecord:
    member_id: int
    kind: IdentifierKind
    masked: str
    value: str | None
    """In full only for the member themself; everyone else sees `masked`."""
    verified_at: datetime


async def identifiers_by_member(
    db: Database, actor: Actor, member_ids: Sequence[int]
) -> dict[int, list[IdentifierRecord]]:
    """The verified identifiers of members the actor may see: the operator and auditors any
    member's, a merchant those of members it has a membership of, a member their own."""
    if actor.role is Role.FINANCE:
        return {}
    ids = list(member_ids)
    if actor.role is Role.MEMBER:
        ids = [i for i in ids if i == actor.member_id]
    keys = keyring(db.settings)
    async with db.autocommit() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT i.member_id, i.kind, i.key_id, i.sealed, i.verified_at"
                    " FROM member_identifier i WHERE i.member_id = ANY(:ids)"
                    " AND (NOT :merchant_only OR EXISTS (SELECT 1 FROM membership m"
                    "   JOIN program p ON p.id = m.program_id"
                    "   WHERE m.member_id = i.member_id AND p.merchant_id = :merchant))"
                    " ORDER BY i.member_id, i.id"
                ),
                {
                    "ids": ids,
                    "merchant_only": actor.role is Role.MERCHANT,
                    "merchant": actor.merchant_id,
                },
            )
        ).all()
    found: dict[int, list[IdentifierRecord]] = {}
    for row in rows:
        kind = IdentifierKind(row.kind)
        value = keys.open(kind, row.key_id, bytes(row.sealed))
        own = actor.role is Role.MEMBER and row.member_id == actor.member_id
        found.setdefault(row.member_id, []).append(
            IdentifierRecord(
                row.member_id, kind, mask(kind, value), value if own else None, row.verified_at
            )
        )
    return found
