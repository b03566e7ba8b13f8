"""`alliance verify` checks tiers too: ladders ordered, tiers of the membership's own program,
and each membership holding the tier its history ends in."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.ledger.verify import verify_ledger
from tests.factories import make_ladder, make_membership, make_program, qualify

CORRUPTIONS = {
    "tier_ladders_ordered": "UPDATE tier SET threshold = 1 WHERE code = 'platinum'",
    "tier_matches_history": "UPDATE membership_tier SET tier_id ="
    " (SELECT min(id) FROM tier WHERE code = 'platinum')",
    "tiers_of_own_program": "UPDATE membership_tier SET tier_id ="
    " (SELECT max(id) FROM tier WHERE code = 'gold')",
}


async def _tiers_with_history(db: Database) -> None:
    for _ in range(2):  # two programs: the second's gold is foreign to the first's member
        program = await make_program(db)
        await make_ladder(db, program)
        membership = await make_membership(db, program)
        await qualify(db, membership, program, spend=1200)


async def _corrupt(db: Database, statement: str) -> None:
    async with db.autocommit() as conn:
        # Bypass the guards the way a bad manual fix would: triggers off for this session.
        await conn.execute(text("SET session_replication_role = replica"))
        try:
            await conn.execute(text(statement))
        finally:
            await conn.execute(text("SET session_replication_role = DEFAULT"))


async def _repair(db: Database) -> None:
    async with db.autocommit() as conn:
        await conn.execute(
            text("TRUNCATE membership_tier, tier_change, qualifying_activity, tier, tier_ladder")
        )


async def test_consistent_tiers_have_no_violations(db: Database) -> None:
    await _tiers_with_history(db)
    assert await verify_ledger(db) == []


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
async def test_verify_finds_tier_corruption(db: Database, check: str) -> None:
    await _tiers_with_history(db)
    await _corrupt(db, CORRUPTIONS[check])
    found = {violation.check for violation in await verify_ledger(db)}
    await _repair(db)
    assert check in found
