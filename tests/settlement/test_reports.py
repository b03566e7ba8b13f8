"""Finance reports: liability at a moment, movements and breakage in a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import Forbidden, InvalidInput
from alliance.exchange.service import exchange_points
from alliance.settlement.reports import liability_at, movements
from tests.exchange.helpers import keys, make_alliance, rate
from tests.factories import ALLIANCE_FINANCE, merchant_actor


async def test_liability_and_movements_follow_the_ledger(db: Database) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    a = await make_alliance(db, ("0.01", "0.02"), points=1000)
    p, q = a.programs
    await rate(db, p, q, "1/2", fee_percent=Decimal(10))
    await exchange_points(
        db,
        a.member,
        from_membership_id=a.memberships[0].id,
        to_membership_id=a.memberships[1].id,
        points=200,
        idempotency_key=next(keys),
    )
    now = datetime.now(UTC) + timedelta(seconds=1)
    owed = {r.program_id: r for r in await liability_at(db, ALLIANCE_FINANCE, at=now)}
    assert owed[p.id].outstanding_points == 800
    assert owed[p.id].liability == Decimal("8.00")
    assert owed[q.id].outstanding_points == 1090  # 200 less the fee of 20, halved
    assert owed[q.id].liability == Decimal("21.80")
    assert {
        r.program_id: r.outstanding_points
        for r in await liability_at(db, ALLIANCE_FINANCE, at=before)
    } == {p.id: 0, q.id: 0}
    moved = {
        r.program_id: r for r in await movements(db, ALLIANCE_FINANCE, since=before, until=now)
    }
    assert (moved[p.id].issued, moved[p.id].exchanged_out, moved[p.id].fees) == (1000, 180, 20)
    assert (moved[q.id].issued, moved[q.id].exchanged_in) == (1000, 90)
    assert moved[p.id].breakage_rate == Decimal(0)
    own = await liability_at(db, merchant_actor(p.merchant_id), at=now)
    assert [r.program_id for r in own] == [p.id]
    with pytest.raises(InvalidInput):
        await movements(db, ALLIANCE_FINANCE, since=now, until=before)
    with pytest.raises(Forbidden):
        await liability_at(db, a.member, at=now)
