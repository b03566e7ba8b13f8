"""Linking helpers: start a verification and read the code from the outbox, as the phone would."""

from __future__ import annotations

from sqlalchemy import text

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.identity.delivery import delivered_code
from alliance.identity.models import IdentifierKind
from alliance.identity.service import LinkResult, confirm_verification, start_verification
from alliance.members.queries import MembershipRecord


async def code_for(db: Database, verification_id: int) -> str:
    delivered = await delivered_code(db, verification_id)
    assert delivered is not None
    return delivered[1]


async def link(
    db: Database,
    actor: Actor,
    membership: MembershipRecord,
    identifier: str,
    kind: IdentifierKind = IdentifierKind.PHONE,
) -> LinkResult:
    started = await start_verification(
        db, actor, membership_id=membership.id, kind=kind, identifier=identifier
    )
    code = await code_for(db, started.id)
    return await confirm_verification(db, actor, verification_id=started.id, code=code)


async def same_person(db: Database, membership_id: int, member_id: int) -> None:
    """Put a fresh membership (no postings yet) under another member, as if the merchant
    had enrolled an already-linked member: the setup of merge scenarios."""
    async with db.autocommit() as conn:
        old = await conn.scalar(
            text("SELECT member_id FROM membership WHERE id = :id"), {"id": membership_id}
        )
        params = {"m": member_id, "id": membership_id}
        await conn.execute(text("UPDATE membership SET member_id = :m WHERE id = :id"), params)
        await conn.execute(
            text("UPDATE account SET member_id = :m WHERE membership_id = :id"), params
        )
        await conn.execute(text("DELETE FROM member WHERE id = :old"), {"old": old})
