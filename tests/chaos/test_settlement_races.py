"""Settlement runs racing the exchanges and partner redemptions they settle: the period
closes while obligations are still being written into it. Every obligation is settled
exactly once (in its period, or the next if it committed late), the statements reconcile,
and the ledger holds. Exchanges also race spends on the same hot accounts.

Short form in CI (120 movements); ALLIANCE_SLOW=1 sends 1,000.
"""

from __future__ import annotations

import asyncio
import os
import random
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import DomainError, InsufficientPoints
from alliance.exchange.service import exchange_points, redeem_at_partner, set_partner_acceptance
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.settlement.reconcile import reconcile_period
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import ALLIANCE_FINANCE, merchant_actor
from tests.settlement.helpers import settle

pytestmark = pytest.mark.slow
MOVES = 1000 if os.environ.get("ALLIANCE_SLOW") == "1" else 120


async def test_settlement_runs_racing_exchanges_settle_everything_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await make_alliance(db, ("0.01", "0.02", "0.005"), points=50_000)
    p, m = a.programs, a.memberships
    await rate(db, p[0], p[1], "1/2", fee_percent=Decimal("1.5"))
    await rate(db, p[1], p[2], "4", fee_points=1)
    await rate(db, p[2], p[0], "1/2")
    await set_partner_acceptance(
        db, merchant_actor(p[2].merchant_id), program_id=p[0].id, accepts=True
    )
    rng = random.Random(11)
    stop = asyncio.Event()

    async def move(n: int) -> None:
        i = rng.randrange(3)
        try:
            match rng.choice(("exchange", "exchange", "partner", "spend")):
                case "exchange":
                    await exchange_points(
                        db,
                        a.member,
                        from_membership_id=m[i].id,
                        to_membership_id=m[(i + 1) % 3].id,
                        points=rng.randint(10, 400),
                        idempotency_key=next(keys),
                    )
                case "partner":
                    await redeem_at_partner(
                        db,
                        a.member,
                        membership_id=m[0].id,
                        merchant_id=p[2].merchant_id,
                        points=rng.randint(1, 300),
                        reference=f"bill {n}",
                        idempotency_key=next(keys),
                    )
                case _:
                    await spend_points(
                        db,
                        merchant_actor(p[i].merchant_id),
                        membership_id=m[i].id,
                        points=rng.randint(1, 300),
                        reason="counter",
                        idempotency_key=next(keys),
                    )
        except InsufficientPoints:
            pass
        except DomainError as error:
            raise AssertionError(f"unexpected refusal: {error!r}") from error

    async def runs() -> int:
        closed = 0
        while not stop.is_set():
            closed += len(await settle(db, monkeypatch, days=2))
            await asyncio.sleep(0)
        return closed

    for n in range(10):  # obligations to settle before the runs start
        await move(n)
    runner = asyncio.create_task(runs())
    await asyncio.gather(*(move(n) for n in range(10, MOVES)))
    stop.set()
    await runner
    await settle(db, monkeypatch, days=4)  # the late ones, in the next period
    obligations = await db.fetch_one("SELECT count(*) FROM settlement_obligation")
    settled = await db.fetch_one("SELECT coalesce(sum(obligations), 0) FROM settlement_period")
    assert obligations == settled
    periods = await db.fetch_all("SELECT count(*) FROM settlement_period WHERE obligations > 0")
    assert periods[0][0] >= 2, "the race left nothing late: runs never overlapped the writes"
    for (period_id,) in await db.fetch_all("SELECT id FROM settlement_period"):
        report = await reconcile_period(db, ALLIANCE_FINANCE, period_id=period_id)
        assert report.differences == []
    assert await verify_ledger(db) == []
