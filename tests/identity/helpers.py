"""Linking helpers: start a verification and read the code from the outbox, as the phone would."""

from __future__ import annotations

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
