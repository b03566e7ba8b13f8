"""Enrolling members into a merchant's program."""

from __future__ import annotations

from sqlalchemy import exists, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from alliance.audit.service import record_audit
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.db.errors import constraint_name
from alliance.errors import AlreadyExists, Inactive, InvalidInput, NotFound
from alliance.ledger.models import Account, AccountKind
from alliance.members.models import Member, Membership
from alliance.members.queries import MembershipRecord, memberships_by_id
from alliance.programs.models import Program
from alliance.validation import clean_code, clean_text

MAX_SEGMENTS = 20


async def enroll_member(
    db: Database,
    actor: Actor,
    *,
    program_id: int,
    member_number: str,
    display_name: str | None = None,
    member_id: int | None = None,
) -> MembershipRecord:
    """Open a membership (and its points account) in one of the merchant's programs.

    Without `member_id` a new alliance member is created. With it, the person must
    already be a member of this merchant: a merchant links only people it knows
    (cross-merchant linking goes through verified identifiers and consent).
    """
    actor.require(Role.MERCHANT)
    member_number = clean_text(member_number, "memberNumber", max_length=64)
    if display_name is not None:
        display_name = clean_text(display_name, "displayName", max_length=200, required=False)

    async with db.transaction() as session:
        program = await session.get(Program, program_id)
        if program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("program not found", field=("programId",))
        if program.status != "active":
            raise Inactive("program is closed", field=("programId",))
        if member_id is None:
            member = Member(display_name=display_name or None)
            session.add(member)
            await session.flush()
            member_id = member.id
        else:
            known = await session.scalar(
                select(
                    exists().where(
                        Membership.member_id == member_id,
                        Membership.program_id.in_(
                            select(Program.id).where(Program.merchant_id == actor.merchant_id)
                        ),
                        # A member merged into another, or erased, takes no new membership.
                        Membership.member_id.in_(
                            select(Member.id).where(
                                Member.merged_into_id.is_(None), Member.erased_at.is_(None)
                            )
                        ),
                    )
                )
            )
            if not known:
                raise NotFound("member not found", field=("memberId",))
        membership = await open_membership(
            session, member_id=member_id, program_id=program_id, member_number=member_number
        )
        await record_audit(
            session,
            actor,
            action="membership.enroll",
            target=f"membership:{membership.id}",
            after={
                "program_id": program_id,
                "member_id": member_id,
                "member_number": member_number,
            },
        )
        return MembershipRecord(
            membership.id,
            member_id,
            program_id,
            member_number,
            membership.status,
            membership.created_at,
            0,
            0,
            0,
            [],
        )


async def open_membership(
    session: AsyncSession, *, member_id: int, program_id: int, member_number: str
) -> Membership:
    """The membership row and its points account; the caller has authorized it."""
    membership = Membership(member_id=member_id, program_id=program_id, member_number=member_number)
    session.add(membership)
    try:
        await session.flush()
    except IntegrityError as error:
        match constraint_name(error):
            case "uq_membership_program_number":
                raise AlreadyExists(
                    f"member number {member_number} is taken in this program",
                    field=("memberNumber",),
                ) from None
            case "uq_membership_program_member":
                raise AlreadyExists(
                    "this member is already enrolled in the program", field=("memberId",)
                ) from None
        raise
    await session.execute(
        insert(Account).values(
            program_id=program_id,
            kind=AccountKind.MEMBER.value,
            membership_id=membership.id,
            member_id=member_id,
            balance=0,
            held=0,
        )
    )
    await session.refresh(membership)
    return membership


async def set_member_segments(
    db: Database, actor: Actor, *, membership_id: int, segments: list[str]
) -> MembershipRecord:
    """The merchant's segments for one of its memberships (what promotion audiences name)."""
    actor.require(Role.MERCHANT)
    cleaned = sorted({clean_code(segment, "segments") for segment in segments})
    if len(cleaned) > MAX_SEGMENTS:
        raise InvalidInput(f"at most {MAX_SEGMENTS} segments", field=("segments",))
    async with db.transaction() as session:
        membership = await session.get(Membership, membership_id, with_for_update=True)
        program = None if membership is None else await session.get(Program, membership.program_id)
        if membership is None or program is None or program.merchant_id != actor.merchant_id:
            raise NotFound("membership not found", field=("membershipId",))
        before = list(membership.segments)
        membership.segments = cleaned
        await record_audit(
            session, actor, action="membership.segments", target=f"membership:{membership_id}",
            before={"segments": before}, after={"segments": cleaned},
        )  # fmt: skip
    found = await memberships_by_id(db, actor, [membership_id])
    return found[membership_id]
