"""Factories for rewards tests: plain async functions with defaults."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from alliance.db.engine import Database
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from alliance.rewards.catalog import RewardRecord, RewardTerms, create_reward
from alliance.rewards.models import RewardKind
from alliance.rewards.redemptions import Reservation, reserve_reward
from tests.factories import give_points, make_membership, make_program, merchant_actor

_sequence = itertools.count(1)

TERMS = RewardTerms(kind=RewardKind.COUPON, name="Free tea", points_price=100)


async def make_reward(
    db: Database, program: ProgramRecord, *, stock: int | None = 10, **terms: Any
) -> RewardRecord:
    return await create_reward(
        db, merchant_actor(program.merchant_id), program_id=program.id,
        code=f"reward-{next(_sequence)}", terms=replace(TERMS, **terms), stock=stock,
    )  # fmt: skip


async def member_with_points(
    db: Database, program: ProgramRecord, points: int = 1000
) -> MembershipRecord:
    membership = await make_membership(db, program)
    if points:
        await give_points(db, membership, program, points)
    return membership


async def setup(
    db: Database, *, points: int = 1000, stock: int | None = 10, **terms: Any
) -> tuple[ProgramRecord, RewardRecord, MembershipRecord]:
    program = await make_program(db)
    reward = await make_reward(db, program, stock=stock, **terms)
    membership = await member_with_points(db, program, points)
    return program, reward, membership


async def reserve(
    db: Database,
    program: ProgramRecord,
    reward: RewardRecord,
    membership: MembershipRecord,
    key: str | None = None,
) -> Reservation:
    return await reserve_reward(
        db, merchant_actor(program.merchant_id), membership_id=membership.id,
        reward_id=reward.id, idempotency_key=key or f"rsv-{next(_sequence)}",
    )  # fmt: skip


async def account(db: Database, membership: MembershipRecord) -> tuple[int, int]:
    row = await db.fetch_one(
        "SELECT balance, held FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def stock(db: Database, reward: RewardRecord) -> tuple[int | None, int]:
    row = await db.fetch_one(
        "SELECT sum(stock)::bigint, sum(redeemed)::bigint FROM reward_stock_slot"
        " WHERE reward_id = %(r)s",
        {"r": reward.id},
    )
    assert row is not None
    return row[0], int(row[1])
