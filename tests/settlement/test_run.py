"""Settlement runs: statements equal their obligations, nets sum to zero, late
obligations fall into the next period, a closed period never changes, and a run that
dies is finished with identical statements."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import Forbidden
from alliance.exchange.service import exchange_points, redeem_at_partner, set_partner_acceptance
from alliance.settlement import run as settlement_run
from alliance.settlement.run import run_settlement
from alliance.settlement.statements import draft_statements
from tests.exchange.helpers import Alliance, keys, make_alliance, rate
from tests.factories import OPERATOR, merchant_actor
from tests.settlement.helpers import groups_by_brute_force, settle, statement_lines


async def _trade(db: Database) -> Alliance:
    """Three merchants (point values 0.01, 0.02, 0.005): exchanges round the triangle with
    fees, and partner redemptions."""
    a = await make_alliance(db, ("0.01", "0.02", "0.005"), points=100_000)
    p = a.programs
    await rate(db, p[0], p[1], "1/3", fee_percent=Decimal("1.5"))
    await rate(db, p[1], p[2], "4", fee_points=2)
    await rate(db, p[2], p[0], "1/2")
    await set_partner_acceptance(
        db, merchant_actor(p[1].merchant_id), program_id=p[0].id, accepts=True
    )
    m = a.memberships
    for points in (1000, 333, 77):
        await exchange_points(
            db,
            a.member,
            from_membership_id=m[0].id,
            to_membership_id=m[1].id,
            points=points,
            idempotency_key=next(keys),
        )
        await exchange_points(
            db,
            a.member,
            from_membership_id=m[1].id,
            to_membership_id=m[2].id,
            points=points,
            idempotency_key=next(keys),
        )
        await exchange_points(
            db,
            a.member,
            from_membership_id=m[2].id,
            to_membership_id=m[0].id,
            points=points,
            idempotency_key=next(keys),
        )
        await redeem_at_partner(
            db,
            a.member,
            membership_id=m[0].id,
            merchant_id=p[1].merchant_id,
            points=points,
            reference=f"bill {points}",
            idempotency_key=next(keys),
        )
    return a


async def _obligation_ids(db: Database) -> list[int]:
    return [row[0] for row in await db.fetch_all("SELECT id FROM settlement_obligation")]


async def test_statements_equal_their_obligations_and_nets_sum_to_zero(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _trade(db)
    ids = await _obligation_ids(db)
    closed = await settle(db, monkeypatch)
    assert [p.obligations for p in closed if p.obligations] == [len(ids)]
    period = next(p for p in closed if p.obligations)
    expected = draft_statements(await groups_by_brute_force(db, ids))
    lines = await statement_lines(db, period.id)
    assert lines == [
        (
            d.party,
            n,
            line.kind.value,
            line.counterparty,
            line.obligation_kind,
            line.obligations,
            line.points,
            line.exact,
            line.amount,
        )
        for d in expected
        for n, line in enumerate(d.lines, start=1)
    ]
    nets = await db.fetch_all(
        "SELECT net, rounding, receivable, payable FROM settlement_statement"
        " WHERE period_id = %(p)s",
        {"p": period.id},
    )
    assert sum(row[0] for row in nets) == 0
    assert len(nets) == 4  # three merchants and the alliance (fees)
    exact_total = await db.fetch_one("SELECT sum(amount) FROM settlement_obligation")
    payable = sum(row[3] for row in nets)
    assert exact_total is not None
    assert abs(payable - exact_total[0]) < Decimal("0.01") * len(lines)


async def test_a_closed_period_never_changes_and_late_obligations_fall_into_the_next(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _trade(db)
    first = [p for p in await settle(db, monkeypatch, days=2) if p.obligations]
    before = await statement_lines(db, first[0].id)
    assert await settle(db, monkeypatch, days=2) == []
    # A late one: it happened today, but after today's period was closed.
    m = a.memberships
    late = await exchange_points(
        db,
        a.member,
        from_membership_id=m[0].id,
        to_membership_id=m[1].id,
        points=500,
        idempotency_key=next(keys),
    )
    assert await settle(db, monkeypatch, days=2) == []  # the next period has not ended
    assert await statement_lines(db, first[0].id) == before
    nxt = [p for p in await settle(db, monkeypatch, days=4) if p.obligations]
    assert len(nxt) == 1
    assert nxt[0].starts_at == first[0].ends_at or nxt[0].starts_at > first[0].ends_at
    traced = await db.fetch_all(
        "SELECT o.transaction_id FROM settlement_obligation o WHERE o.id > %(w)s"
        " AND o.id <= %(w2)s",
        {"w": first[0].watermark, "w2": nxt[0].watermark},
    )
    assert {row[0] for row in traced} == {late.exchange.transaction_id}
    assert (
        sum(
            row[0]
            for row in await db.fetch_all(
                "SELECT net FROM settlement_statement WHERE period_id = %(p)s", {"p": nxt[0].id}
            )
        )
        == 0
    )


async def test_a_run_that_dies_is_finished_with_identical_statements(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await _trade(db)
    ids = await _obligation_ids(db)

    def die(_groups: object) -> None:
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(settlement_run, "draft_statements", die)
    with pytest.raises(RuntimeError):
        await settle(db, monkeypatch)
    running = await db.fetch_all("SELECT id, status, watermark FROM settlement_period")
    assert [row[1] for row in running] == ["running"]
    assert await db.fetch_one("SELECT count(*) FROM settlement_statement") == (0,)
    # Activity after the watermark was fixed goes to the next period, not this one.
    m = a.memberships
    await exchange_points(
        db,
        a.member,
        from_membership_id=m[0].id,
        to_membership_id=m[1].id,
        points=400,
        idempotency_key=next(keys),
    )
    monkeypatch.setattr(settlement_run, "draft_statements", draft_statements)
    closed = [p for p in await settle(db, monkeypatch) if p.obligations]
    assert closed[0].id == running[0][0]
    assert closed[0].obligations == len(ids)
    expected = draft_statements(await groups_by_brute_force(db, ids))
    assert await statement_lines(db, closed[0].id) == [
        (
            d.party,
            n,
            line.kind.value,
            line.counterparty,
            line.obligation_kind,
            line.obligations,
            line.points,
            line.exact,
            line.amount,
        )
        for d in expected
        for n, line in enumerate(d.lines, start=1)
    ]


async def test_only_the_clearing_house_runs_settlement(db: Database) -> None:
    await run_settlement(db, OPERATOR)
    program_merchant = merchant_actor(1)
    with pytest.raises(Forbidden):
        await run_settlement(db, program_merchant)


async def test_concurrent_runs_take_turns_and_close_each_period_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _trade(db)
    ids = await _obligation_ids(db)
    results = await asyncio.wait_for(
        asyncio.gather(*(settle(db, monkeypatch) for _ in range(4))), timeout=20
    )
    closed = [p for periods in results for p in periods]
    assert len({p.id for p in closed}) == len(closed)  # no period closed twice
    assert sum(p.obligations or 0 for p in closed) == len(ids)
