"""Random exchanges, partner redemptions at the counter and partner rewards (completed or
cancelled) across four merchants, settled in two periods:
every statement equals its obligations, nets sum to zero, reconciliation finds nothing,
and `verify` holds (checked by the fixture after the test too)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.db.engine import Database
from alliance.errors import DomainError
from alliance.exchange.service import exchange_points, redeem_at_partner, set_partner_acceptance
from alliance.ledger.verify import verify_ledger
from alliance.rewards.redemptions import (
    cancel_redemption,
    complete_redemption,
    fulfil_redemption,
    reserve_reward,
)
from alliance.settlement.reconcile import reconcile_period
from tests.database import verify_and_reset
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import ALLIANCE_FINANCE, merchant_actor
from tests.rewards.helpers import make_reward
from tests.settlement.helpers import settle

moves = st.lists(
    st.tuples(
        st.sampled_from(["exchange", "partner", "reward"]),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(1, 900),
    ),
    min_size=1,
    max_size=14,
)


@given(first=moves, second=moves)
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_random_activity_settles_exactly(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    first: list[tuple[str, int, int, int]],
    second: list[tuple[str, int, int, int]],
) -> None:
    a = await make_alliance(db, ("0.01", "0.02", "0.005", "0.013"), points=5000)
    p = a.programs
    rates = {
        (0, 1): "1/3",
        (1, 0): "2",
        (1, 2): "7/2",
        (2, 3): "1/3",
        (3, 0): "6/5",
        (2, 0): "1/2",
        (0, 3): "3/4",
    }
    for (i, j), value in rates.items():
        await rate(db, p[i], p[j], value, fee_percent=Decimal("1.25") * (i + 1), fee_points=i)
    for i in range(4):
        await set_partner_acceptance(
            db, merchant_actor(p[(i + 1) % 4].merchant_id), program_id=p[i].id, accepts=True
        )
    rewards = [await make_reward(db, program, stock=None, points_price=37) for program in p]
    for days, activity in ((2, first), (4, second)):
        for kind, i, j, points in activity:
            try:
                if kind == "exchange":
                    await exchange_points(
                        db,
                        a.member,
                        from_membership_id=a.memberships[i].id,
                        to_membership_id=a.memberships[j].id,
                        points=points,
                        idempotency_key=next(keys),
                    )
                elif kind == "reward":  # B's reward paid with A points: kept or cancelled
                    b = (i + 1) % 4
                    red = await reserve_reward(
                        db, a.member, membership_id=a.memberships[i].id,
                        reward_id=rewards[b].id, idempotency_key=next(keys),
                    )  # fmt: skip
                    seller = merchant_actor(p[b].merchant_id)
                    if j % 2:
                        await cancel_redemption(db, seller, redemption_id=red.redemption.id)
                    else:
                        await fulfil_redemption(db, seller, redemption_id=red.redemption.id)
                        await complete_redemption(db, seller, redemption_id=red.redemption.id)
                else:
                    await redeem_at_partner(
                        db,
                        a.member,
                        membership_id=a.memberships[i].id,
                        merchant_id=p[(i + 1) % 4].merchant_id,
                        points=points,
                        reference="r",
                        idempotency_key=next(keys),
                    )
            except DomainError:
                pass  # no rate for the pair, too few points, same program: nothing written
        for period in await settle(db, monkeypatch, days=days):
            report = await reconcile_period(db, ALLIANCE_FINANCE, period_id=period.id)
            assert report.differences == []
            nets = await db.fetch_all(
                "SELECT net FROM settlement_statement WHERE period_id = %(p)s", {"p": period.id}
            )
            assert sum(row[0] for row in nets) == 0
    total = await db.fetch_one("SELECT count(*) FROM settlement_obligation")
    settled = await db.fetch_one("SELECT coalesce(sum(obligations), 0) FROM settlement_period")
    assert total == settled
    assert await verify_ledger(db) == []
    await verify_and_reset(db)  # each example starts from an empty database
