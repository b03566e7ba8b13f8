"""Merging two members who are one person, and unlinking a membership from its member.

An account's `member_id` is its *ledger member*: the member it was opened for, the key its
postings, lots and clawback debt carry (the ledger's distribution key). It never changes:
the foundation's movements read it before they lock the account, refunds find the
clawback debt by it, and postings are immutable. What a merge or unlink changes is the
membership's member, i.e. who the account belongs to now; reads by member go through
memberships (alliance/members/queries.py).

- **Fold** (both members hold an account in the program): the absorbed account's balance
  moves to the survivor's account by a `merge` ledger transaction (-n / +n, balanced),
  its open lots are consumed and re-created on the survivor's account with the same
  `available_at` and `expires_at`, clawback debt follows through the program's clawback
  account; the absorbed membership is closed and keeps its history. The absorbed account
  points to the survivor's (`folded_into_id`) and each re-created lot names the transaction
  its points came from (`origin_transaction_id`), so a later refund of a purchase earned
  there, or of a discount paid from it, claws back from (or gives back to) the survivor's
  account, taking that purchase's points first (migrations/sql/0013_folds.sql).
- **Re-home** (only the absorbed member is in the program, or a membership is unlinked):
  the membership goes to the other member with its account as it is: no points move, so
  nothing races with the account's own movements.

Lock order: member rows by id, then every member account of both by id (as the expiry job
does), before anything is read for the move: a concurrent spend either commits first (the
fold carries what is left) or waits and then finds the account emptied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import IdempotencyKeyReused, InvalidInput, NotFound
from alliance.ledger.service import request_fingerprint
from alliance.validation import check_idempotency_key, clean_text

MERGE_SCOPE = "system:merge"


@dataclass(frozen=True, slots=True)
class MergeResult:
    merge_id: int
    survivor_id: int
    absorbed_id: int
    memberships_moved: int
    accounts_folded: int
    points_moved: int
    created_at: datetime
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    membership_id: int
    program_id: int
    member_id: int
    """The membership's member (whose account it is now)."""
    ledger_member_id: int
    """The account's ledger member (what its postings and lots carry)."""
    balance: int
    held: int
    debt: int


async def merge_members(
    db: Database,
    actor: Actor,
    *,
    survivor_id: int,
    absorbed_id: int,
    reason: str,
    idempotency_key: str,
) -> MergeResult:
    """Fold `absorbed` into `survivor` (operator). Idempotent by the client's key."""
    actor.require(Role.OPERATOR)
    reason = clean_text(reason, "reason", max_length=500)
    check_idempotency_key(idempotency_key)
    if survivor_id == absorbed_id:
        raise InvalidInput("a member cannot be merged into itself", field=("absorbedId",))
    fingerprint = request_fingerprint(
        "merge", survivor=survivor_id, absorbed=absorbed_id, reason=reason
    )
    async with db.transaction() as session:
        return await merge_in_session(
            session, actor, survivor_id=survivor_id, absorbed_id=absorbed_id,
            initiated_by="operator", reason=reason, scope=actor.idempotency_scope,
            key=idempotency_key, fingerprint=fingerprint,
        )  # fmt: skip


async def merge_in_session(
    session: AsyncSession,
    actor: Actor,
    *,
    survivor_id: int,
    absorbed_id: int,
    initiated_by: str,
    reason: str,
    scope: str,
    key: str,
    fingerprint: bytes,
) -> MergeResult:
    """The merge inside the caller's transaction (the caller has authorized it)."""
    # Claim the key first: a concurrent request with the same key waits here.
    claimed = await session.scalar(
        text(
            "INSERT INTO member_merge (survivor_id, absorbed_id, initiated_by,"
            " idempotency_scope, idempotency_key, request_hash, reason, memberships_moved,"
            " accounts_folded, points_moved)"
            " SELECT :survivor, :absorbed, :initiated_by, :scope, :key, :hash, :reason, 0, 0, 0"
            " WHERE EXISTS (SELECT 1 FROM member WHERE id = :survivor)"
            " AND EXISTS (SELECT 1 FROM member WHERE id = :absorbed)"
            " ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING RETURNING id"
        ),
        {"survivor": survivor_id, "absorbed": absorbed_id, "initiated_by": initiated_by,
         "scope": scope, "key": key, "hash": fingerprint, "reason": reason},
    )  # fmt: skip
    if claimed is None:
        return await _replay(session, scope, key, fingerprint, survivor_id, absorbed_id)
    merge_id = int(claimed)
    members = await lock_members(session, [survivor_id, absorbed_id])
    for member_id, field in ((survivor_id, "survivorId"), (absorbed_id, "absorbedId")):
        row = members.get(member_id)
        if row is None or row["merged_into_id"] is not None or row["erased_at"] is not None:
            raise NotFound("member not found", field=(field,))
    accounts = await lock_accounts(session, [survivor_id, absorbed_id])
    survivor_programs = {a.program_id: a for a in accounts if a.member_id == survivor_id}
    moved = folded = points = 0
    for account in accounts:
        if account.member_id != absorbed_id:
            continue
        target = survivor_programs.get(account.program_id)
        if target is None:
            await rehome_account(session, account, survivor_id)
            moved += 1
        else:
            points += await fold_account(session, account, target, merge_id=merge_id,
                                         client_id=actor.client_id, reason=reason)  # fmt: skip
            folded += 1
    await _move_person(session, survivor_id, absorbed_id, members)
    await session.execute(
        text(
            "UPDATE member_merge SET memberships_moved = :moved, accounts_folded = :folded,"
            " points_moved = :points WHERE id = :id"
        ),
        {"moved": moved, "folded": folded, "points": points, "id": merge_id},
    )
    await record_audit(
        session, actor, action="member.merge", target=f"member:{survivor_id}",
        before={"absorbed_id": absorbed_id},
        after={"merge_id": merge_id, "initiated_by": initiated_by, "memberships_moved": moved,
               "accounts_folded": folded, "points_moved": points},
    )  # fmt: skip
    await session.execute(
        text(
            "INSERT INTO outbox_event (topic, member_id, payload) VALUES ('member.merged',"
            " :survivor, jsonb_build_object('merge_id', :id, 'survivor_id', :survivor,"
            " 'absorbed_id', :absorbed))"
        ),
        {"survivor": survivor_id, "absorbed": absorbed_id, "id": merge_id},
    )
    created_at = await session.scalar(
        text("SELECT created_at FROM member_merge WHERE id = :id"), {"id": merge_id}
    )
    return MergeResult(merge_id, survivor_id, absorbed_id, moved, folded, points, created_at,
                       replayed=False)  # fmt: skip


async def _replay(
    session: AsyncSession,
    scope: str,
    key: str,
    fingerprint: bytes,
    survivor_id: int,
    absorbed_id: int,
) -> MergeResult:
    row = (
        await session.execute(
            text(
                "SELECT id, survivor_id, absorbed_id, memberships_moved, accounts_folded,"
                " points_moved, created_at, request_hash FROM member_merge"
                " WHERE idempotency_scope = :scope AND idempotency_key = :key"
            ),
            {"scope": scope, "key": key},
        )
    ).first()
    if row is None:
        # Nothing claimed the key: one of the members does not exist.
        missing = "survivorId" if not await _exists(session, survivor_id) else "absorbedId"
        raise NotFound("member not found", field=(missing,))
    if bytes(row.request_hash) != fingerprint:
        raise IdempotencyKeyReused(
            "idempotency key was already used for a different merge", field=("idempotencyKey",)
        )
    return MergeResult(
        row.id, row.survivor_id, row.absorbed_id, row.memberships_moved,
        row.accounts_folded, row.points_moved, row.created_at, replayed=True,
    )  # fmt: skip


async def _exists(session: AsyncSession, member_id: int) -> bool:
    found = await session.scalar(text("SELECT 1 FROM member WHERE id = :id"), {"id": member_id})
    return found is not None


async def lock_members(session: AsyncSession, member_ids: list[int]) -> dict[int, Any]:
    """Member rows locked in id order (merges, unlinks and erasures of one member queue).

    NO KEY UPDATE: the foreign keys that rows written meanwhile hold on members (KEY
    SHARE, e.g. the merge's own record) do not conflict with it, so they cannot deadlock."""
    rows = await session.execute(
        text(
            "SELECT id, display_name, merged_into_id, erased_at FROM member"
            " WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE"
        ),
        {"ids": sorted(set(member_ids))},
    )
    return {row.id: row._mapping for row in rows}


async def lock_accounts(
    session: AsyncSession, member_ids: list[int], *, membership_id: int | None = None
) -> list[_Account]:
    """The members' accounts locked in account id order: the ledger's lock order."""
    rows = await session.execute(
        text(
            "SELECT a.id, a.membership_id, a.program_id, m.member_id, a.member_id, a.balance,"
            " a.held, a.debt"
            " FROM account a JOIN membership m ON m.id = a.membership_id"
            " WHERE m.member_id = ANY(:ids) AND (CAST(:membership AS bigint) IS NULL"
            " OR m.id = :membership) ORDER BY a.id FOR UPDATE OF a"
        ),
        {"ids": sorted(set(member_ids)), "membership": membership_id},
    )
    return [_Account(*row) for row in rows]


def _refuse_held(account: _Account) -> None:
    if account.held:
        raise InvalidInput(
            f"{account.held} points are held on membership {account.membership_id}:"
            " capture or void its authorizations first",
            field=("membershipId",),
        )


async def fold_account(
    session: AsyncSession,
    source: _Account,
    target: _Account,
    *,
    merge_id: int,
    client_id: str,
    reason: str,
) -> int:
    """Move everything of `source` into `target` (same program) and close its membership."""
    _refuse_held(source)
    await _carry(session, source, target, key=f"merge:{merge_id}:account:{source.id}",
                 client_id=client_id, reason=reason, details={"merge_id": merge_id})  # fmt: skip
    # Refunds of what it earned, and of discounts it paid, follow it to the target.
    await session.execute(
        text("UPDATE account SET balance = 0, debt = 0, folded_into_id = :target WHERE id = :id"),
        {"id": source.id, "target": target.id},
    )
    await session.execute(
        text("UPDATE account SET balance = balance + :points, debt = debt + :debt WHERE id = :id"),
        {"points": source.balance, "debt": source.debt, "id": target.id},
    )
    await session.execute(
        text("UPDATE membership SET status = 'closed' WHERE id = :id"), {"id": source.membership_id}
    )
    return source.balance


async def rehome_account(session: AsyncSession, account: _Account, member_id: int) -> int:
    """Give the membership, with its account as it is, to `member_id`; its balance."""
    params = {"member": member_id, "membership": account.membership_id}
    await session.execute(
        text("UPDATE membership SET member_id = :member WHERE id = :membership"), params
    )
    await session.execute(
        text("UPDATE membership_tier SET member_id = :member WHERE membership_id = :membership"),
        params,
    )
    return account.balance


async def _carry(
    session: AsyncSession,
    source: _Account,
    target: _Account,
    *,
    key: str,
    client_id: str,
    reason: str,
    details: dict[str, Any],
) -> None:
    """The `merge` ledger transaction: balance, lots and debt from source to target."""
    if source.balance == 0 and source.debt == 0:
        return  # nothing to carry: no transaction (a transaction has at least two postings)
    transaction_id = await session.scalar(
        text(
            "INSERT INTO ledger_transaction (kind, member_id, client_id, idempotency_scope,"
            " idempotency_key, reason, details)"
            " VALUES ('merge', :member, :client, :scope, :key, :reason, CAST(:details AS jsonb))"
            " RETURNING id"
        ),
        {"member": target.member_id, "client": client_id, "scope": MERGE_SCOPE, "key": key,
         "reason": reason,
         "details": _json(details | {"from_member_id": source.ledger_member_id,
                                     "to_member_id": target.ledger_member_id,
                                     "from_account_id": source.id,
                                     "to_account_id": target.id})},
    )  # fmt: skip
    legs: list[dict[str, Any]] = []
    if source.balance:
        assert target.id != source.id, "a fold moves points between two accounts"
        target_after = target.balance + source.balance
        legs += [
            {"account": source.id, "member": source.ledger_member_id, "amount": -source.balance,
             "after": 0},
            {"account": target.id, "member": target.ledger_member_id, "amount": source.balance,
             "after": target_after},
        ]  # fmt: skip
    if source.debt:
        # Debt is what the clawback account holds against a member: re-attribute it.
        clawback = await session.scalar(
            text(
                "SELECT id FROM account WHERE program_id = :program AND kind = 'clawback'"
                " AND membership_id IS NULL"
            ),
            {"program": source.program_id},
        )
        legs += [
            {"account": clawback, "member": source.ledger_member_id, "amount": source.debt,
             "after": None},
            {"account": clawback, "member": target.ledger_member_id, "amount": -source.debt,
             "after": None},
        ]  # fmt: skip
    # One statement: the balance trigger checks each statement's postings per transaction.
    await session.execute(
        text(
            "INSERT INTO posting (transaction_id, account_id, program_id, member_id, amount,"
            " balance_after)"
            " SELECT :tx, leg.account, :program, leg.member, leg.amount, leg.after"
            " FROM jsonb_to_recordset(CAST(:legs AS jsonb))"
            " AS leg (n integer, account bigint, member bigint, amount bigint, after bigint)"
            " ORDER BY leg.n"
        ),
        {
            "tx": transaction_id,
            "program": source.program_id,
            "legs": _json([leg | {"n": n} for n, leg in enumerate(legs)]),
        },
    )
    if source.balance:
        # Lots move with their dates (the points expire when they would have) and their
        # origin (a refund of the purchase that earned them claws them back first).
        await session.execute(
            text(
                "WITH open AS (SELECT id, remaining, available_at, expires_at,"
                "   coalesce(origin_transaction_id, transaction_id) AS origin FROM lot"
                "   WHERE account_id = :source AND remaining > 0),"
                " consumed AS (INSERT INTO lot_consumption (transaction_id, lot_id, points)"
                "   SELECT :tx, id, remaining FROM open),"
                " emptied AS (UPDATE lot SET remaining = 0 FROM open WHERE lot.id = open.id)"
                " INSERT INTO lot (account_id, program_id, member_id, transaction_id, amount,"
                "   remaining, available_at, expires_at, origin_transaction_id)"
                " SELECT :target, :program, :member, :tx, remaining, remaining, available_at,"
                "   expires_at, origin FROM open ORDER BY expires_at NULLS LAST, id"
            ),
            {"source": source.id, "target": target.id, "program": source.program_id,
             "member": target.ledger_member_id, "tx": transaction_id},
        )  # fmt: skip


async def _move_person(
    session: AsyncSession, survivor_id: int, absorbed_id: int, members: dict[int, Any]
) -> None:
    """Identifiers, consents and name go to the survivor; the absorbed member is a tombstone."""
    params = {"survivor": survivor_id, "absorbed": absorbed_id}
    await session.execute(
        text("UPDATE member_identifier SET member_id = :survivor WHERE member_id = :absorbed"),
        params,
    )
    # Where both decided for one merchant and purpose, the narrower decision stands.
    await session.execute(
        text(
            "INSERT INTO consent (member_id, merchant_id, purpose, granted_at, withdrawn_at)"
            " SELECT :survivor, merchant_id, purpose, granted_at, withdrawn_at FROM consent"
            " WHERE member_id = :absorbed"
            " ON CONFLICT (member_id, merchant_id, purpose) DO UPDATE SET withdrawn_at ="
            " CASE WHEN consent.withdrawn_at IS NOT NULL OR excluded.withdrawn_at IS NOT NULL"
            " THEN greatest(consent.withdrawn_at, excluded.withdrawn_at, consent.granted_at)"
            " END"
        ),
        params,
    )
    await session.execute(text("DELETE FROM consent WHERE member_id = :absorbed"), params)
    await session.execute(
        text("UPDATE member SET display_name = coalesce(display_name, :name) WHERE id = :survivor"),
        params | {"name": members[absorbed_id]["display_name"]},
    )
    await session.execute(
        text(
            "UPDATE member SET merged_into_id = :survivor, display_name = NULL WHERE id = :absorbed"
        ),
        params,
    )


@dataclass(frozen=True, slots=True)
class Unlink:
    membership_id: int
    from_member_id: int
    to_member_id: int
    """The member of its own the membership now belongs to."""
    replayed: bool


async def unlink_membership(
    db: Database, actor: Actor, *, membership_id: int, reason: str, idempotency_key: str
) -> Unlink:
    """Detach a membership from its member: it becomes a member of its own, keeping its
    account, points and lots in its program. The merchant (its own memberships), the member
    (their own) or the operator. Idempotent by the client's key."""
    actor.require(Role.MERCHANT, Role.MEMBER, Role.OPERATOR)
    reason = clean_text(reason, "reason", max_length=500)
    check_idempotency_key(idempotency_key)
    scope = actor.idempotency_scope
    fingerprint = request_fingerprint("unlink", membership=membership_id, reason=reason)
    async with db.transaction() as session:
        # One request per key at a time: a concurrent retry waits here, then replays.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:claim, 0))"),
            {"claim": f"unlink:{scope}:{idempotency_key}"},
        )
        done = (
            await session.execute(
                text(
                    "SELECT membership_id, from_member_id, to_member_id, request_hash"
                    " FROM membership_unlink"
                    " WHERE idempotency_scope = :scope AND idempotency_key = :key"
                ),
                {"scope": scope, "key": idempotency_key},
            )
        ).first()
        if done is not None:
            if bytes(done.request_hash) != fingerprint:
                raise IdempotencyKeyReused(
                    "idempotency key was already used for a different unlink",
                    field=("idempotencyKey",),
                )
            return Unlink(done.membership_id, done.from_member_id, done.to_member_id, True)
        owner = await session.execute(
            text(
                "SELECT m.member_id, p.merchant_id FROM membership m"
                " JOIN program p ON p.id = m.program_id WHERE m.id = :id"
            ),
            {"id": membership_id},
        )
        row = owner.first()
        if row is None or not _may_unlink(actor, row.member_id, row.merchant_id):
            raise NotFound("membership not found", field=("membershipId",))
        member_id = int(row.member_id)
        await lock_members(session, [member_id])
        accounts = await lock_accounts(session, [member_id])
        mine = [a for a in accounts if a.membership_id == membership_id]
        if not mine or mine[0].member_id != member_id:
            raise NotFound("membership not found", field=("membershipId",))
        if len(accounts) == 1:
            raise InvalidInput(
                "the membership is its member's only one: nothing to unlink from",
                field=("membershipId",),
            )
        new_member = await session.scalar(text("INSERT INTO member DEFAULT VALUES RETURNING id"))
        assert new_member is not None
        await rehome_account(session, mine[0], int(new_member))
        await session.execute(
            text(
                "INSERT INTO membership_unlink (membership_id, from_member_id, to_member_id,"
                " idempotency_scope, idempotency_key, request_hash, reason)"
                " VALUES (:membership, :old, :new, :scope, :key, :hash, :reason)"
            ),
            {"membership": membership_id, "old": member_id, "new": int(new_member),
             "scope": scope, "key": idempotency_key, "hash": fingerprint, "reason": reason},
        )  # fmt: skip
        await record_audit(
            session, actor, action="membership.unlink", target=f"membership:{membership_id}",
            before={"member_id": member_id}, after={"member_id": int(new_member)},
        )  # fmt: skip
        return Unlink(membership_id, member_id, int(new_member), False)


def _may_unlink(actor: Actor, member_id: int, merchant_id: int) -> bool:
    if actor.role is Role.OPERATOR:
        return True
    if actor.role is Role.MERCHANT:
        return actor.merchant_id == merchant_id
    return actor.member_id == member_id and actor.merchant_id == merchant_id


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()
