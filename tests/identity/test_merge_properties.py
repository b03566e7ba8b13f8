"""Random sequences of awards, spends, merges and unlinks keep every ledger invariant and
never create or lose points (Hypothesis draws the sequences)."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import DomainError
from alliance.identity.merge import merge_members, unlink_membership
from alliance.ledger.service import award_points, spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import memberships_by_id
from tests.factories import OPERATOR, make_membership, make_program, merchant_actor

steps = st.lists(
    st.tuples(
        st.sampled_from(["award", "spend", "merge", "unlink"]),
        st.integers(0, 5),
        st.integers(0, 5),
        st.integers(1, 80),
    ),
    min_size=5,
    max_size=25,
)
_keys = itertools.count()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(steps)
async def test_random_merges_keep_the_ledger_whole(
    db: Database, sequence: list[tuple[str, int, int, int]]
) -> None:
    programs = [await make_program(db) for _ in range(2)]
    memberships = [await make_membership(db, programs[n % 2]) for n in range(6)]
    owner = {m.id: programs[n % 2] for n, m in enumerate(memberships)}
    given_points = spent = 0
    for kind, i, j, points in sequence:
        target = memberships[i]
        actor = merchant_actor(owner[target.id].merchant_id)
        key = f"p{next(_keys)}"
        try:
            if kind == "award":
                await award_points(db, actor, membership_id=target.id, points=points,
                                   reason="p", idempotency_key=key)  # fmt: skip
                given_points += points
            elif kind == "spend":
                await spend_points(db, actor, membership_id=target.id, points=points,
                                   reason="p", idempotency_key=key)  # fmt: skip
                spent += points
            elif kind == "merge":
                found = await memberships_by_id(db, OPERATOR, [target.id, memberships[j].id])
                survivor, absorbed = found[target.id].member_id, found[memberships[j].id].member_id
                await merge_members(db, OPERATOR, survivor_id=survivor, absorbed_id=absorbed,
                                    reason="p", idempotency_key=key)  # fmt: skip
            else:
                await unlink_membership(db, OPERATOR, membership_id=target.id, reason="p",
                                        idempotency_key=key)  # fmt: skip
        except DomainError:
            pass  # refused (closed membership, nothing to unlink, not enough points): no change
    assert await verify_ledger(db) == []
    ids = [m.id for m in memberships]
    async with db.autocommit() as conn:
        held = await conn.scalar(
            text("SELECT coalesce(sum(balance), 0) FROM account WHERE membership_id = ANY(:ids)"),
            {"ids": ids},
        )
        # Every active membership belongs to a live member (not merged away).
        stray = await conn.scalar(
            text(
                "SELECT count(*) FROM membership m JOIN member r ON r.id = m.member_id"
                " WHERE m.id = ANY(:ids) AND m.status = 'active' AND r.merged_into_id IS NOT NULL"
            ),
            {"ids": ids},
        )
    assert held == given_points - spent
    assert stray == 0
