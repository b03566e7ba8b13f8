"""An alliance of merchants with one member holding a membership in each program."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

from alliance.auth.actor import Actor
from alliance.db.engine import Database
from alliance.exchange.rates import RateRecord, publish_rate
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    OPERATOR,
    give_points,
    link_membership,
    make_membership,
    make_program,
    member_actor,
)

keys = (f"k{n}" for n in itertools.count())


@dataclass
class Alliance:
    programs: list[ProgramRecord]
    memberships: list[MembershipRecord]
    """The member's membership in each program, in the same order."""
    member: Actor


async def make_alliance(
    db: Database, values: tuple[str, ...] = ("0.01", "0.02"), points: int = 10_000
) -> Alliance:
    programs = [await make_program(db, point_value=Decimal(v)) for v in values]
    first = await make_membership(db, programs[0])
    memberships = [first] + [
        await link_membership(db, program, first.member_id) for program in programs[1:]
    ]
    for membership, program in zip(memberships, programs, strict=True):
        if points:
            await give_points(db, membership, program, points)
    return Alliance(programs, memberships, member_actor(first, programs[0].merchant_id))


async def rate(
    db: Database, source: ProgramRecord, target: ProgramRecord, value: str, **extra: object
) -> RateRecord:
    return await publish_rate(db, OPERATOR, from_program_id=source.id,
                              to_program_id=target.id, rate=value, **extra)  # type: ignore[arg-type]  # fmt: skip


async def balance(db: Database, membership: MembershipRecord) -> int:
    row = await db.fetch_one(
        "SELECT balance FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0])
