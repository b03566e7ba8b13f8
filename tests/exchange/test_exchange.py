"""Quotes and exchanges: figures, postings, obligations, idempotency, refusals."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import (
    ExchangeClosed,
    Forbidden,
    IdempotencyKeyReused,
    InsufficientPoints,
    InvalidInput,
    NoExchangeRate,
    NotFound,
    QuoteExpired,
)
from alliance.exchange.rates import set_exchange_opt_out, withdraw_rate
from alliance.exchange.service import exchange_points, quote_exchange
from tests.exchange.helpers import balance, keys, make_alliance, rate
from tests.factories import OPERATOR, make_membership, member_actor, merchant_actor


async def _obligations(db: Database, transaction_id: int) -> list[tuple[object, ...]]:
    rows = await db.fetch_all(
        "SELECT kind, debtor_merchant_id, creditor_merchant_id, points, amount"
        " FROM settlement_obligation WHERE transaction_id = %(t)s ORDER BY kind",
        {"t": transaction_id},
    )
    return [tuple(row) for row in rows]


async def test_an_exchange_moves_points_at_the_rate_and_writes_what_the_merchants_owe(
    db: Database,
) -> None:
    a = await make_alliance(db, ("0.01", "0.02"))
    source, target = a.programs
    await rate(db, source, target, "1/3", fee_percent=Decimal("2.5"), fee_points=1)
    quote = await quote_exchange(db, a.member, from_membership_id=a.memberships[0].id,
                                 to_membership_id=a.memberships[1].id, points=1000)  # fmt: skip
    # fee = ceil(1000 × 2.5 %) + 1 = 26; 974 / 3 = 324 and 2/3 of a point left over.
    assert (quote.fee, quote.points_out, quote.remainder) == (26, 324, Decimal("0.666666"))
    assert quote.value == Decimal("6.48")

    done = await exchange_points(db, a.member, quote_id=quote.id, idempotency_key=next(keys))
    assert (done.exchange.points_in, done.exchange.fee, done.exchange.points_out) == (1000, 26, 324)
    assert (done.from_balance, done.to_balance) == (9000, 10324)
    assert await balance(db, a.memberships[0]) == 9000
    assert await balance(db, a.memberships[1]) == 10324
    assert await _obligations(db, done.exchange.transaction_id) == [
        ("exchange", source.merchant_id, target.merchant_id, 324, Decimal("6.480000")),
        ("exchange_fee", source.merchant_id, None, 26, Decimal("0.260000")),
    ]
    postings = await db.fetch_all(
        "SELECT a.kind, p.program_id, p.amount FROM posting p JOIN account a"
        " ON a.id = p.account_id WHERE p.transaction_id = %(t)s ORDER BY p.id",
        {"t": done.exchange.transaction_id},
    )
    assert [tuple(row) for row in postings] == [
        ("member", source.id, -1000), ("exchanged_out", source.id, 974), ("fee", source.id, 26),
        ("member", target.id, 324), ("exchanged_in", target.id, -324),
    ]  # fmt: skip


async def test_a_replay_returns_the_first_exchange_and_a_reused_key_is_refused(
    db: Database,
) -> None:
    a = await make_alliance(db)
    await rate(db, a.programs[0], a.programs[1], "2")
    key = next(keys)
    args = {"from_membership_id": a.memberships[0].id, "to_membership_id": a.memberships[1].id}
    first = await exchange_points(db, a.member, points=100, idempotency_key=key, **args)
    again = await exchange_points(db, a.member, points=100, idempotency_key=key, **args)
    assert again.replayed
    assert not first.replayed
    assert again.exchange == first.exchange
    assert (again.from_entry_id, again.to_entry_id) == (first.from_entry_id, first.to_entry_id)
    assert await balance(db, a.memberships[1]) == 10_200
    with pytest.raises(IdempotencyKeyReused):
        await exchange_points(db, a.member, points=101, idempotency_key=key, **args)


async def test_a_quote_is_used_once_and_not_after_it_expires(db: Database) -> None:
    a = await make_alliance(db)
    await rate(db, a.programs[0], a.programs[1], "1")
    args = {"from_membership_id": a.memberships[0].id, "to_membership_id": a.memberships[1].id}
    quote = await quote_exchange(db, a.member, points=50, **args)
    await exchange_points(db, a.member, quote_id=quote.id, idempotency_key=next(keys))
    with pytest.raises(QuoteExpired):
        await exchange_points(db, a.member, quote_id=quote.id, idempotency_key=next(keys))
    short = await quote_exchange(db, a.member, points=50, ttl_seconds=10, **args)
    await db.fetch_all(  # as if its ten seconds had passed
        "UPDATE exchange_quote SET expires_at = now() - interval '1 second' WHERE id = %(id)s"
        " RETURNING id", {"id": short.id},
    )  # fmt: skip
    with pytest.raises(QuoteExpired):
        await exchange_points(db, a.member, quote_id=short.id, idempotency_key=next(keys))
    quote = await quote_exchange(db, a.member, points=50, **args)
    with pytest.raises(InvalidInput):
        await exchange_points(db, a.member, quote_id=quote.id, points=49,
                              idempotency_key=next(keys), **args)  # fmt: skip


async def test_a_quote_keeps_its_rate_when_a_new_version_is_published(db: Database) -> None:
    a = await make_alliance(db)
    await rate(db, a.programs[0], a.programs[1], "2")
    quote = await quote_exchange(db, a.member, from_membership_id=a.memberships[0].id,
                                 to_membership_id=a.memberships[1].id, points=100)  # fmt: skip
    await rate(db, a.programs[0], a.programs[1], "1")
    done = await exchange_points(db, a.member, quote_id=quote.id, idempotency_key=next(keys))
    assert done.exchange.points_out == 200
    direct = await exchange_points(db, a.member, from_membership_id=a.memberships[0].id,
                                   to_membership_id=a.memberships[1].id, points=100,
                                   idempotency_key=next(keys))  # fmt: skip
    assert direct.exchange.points_out == 100


async def test_refusals_are_typed_and_write_nothing(db: Database) -> None:
    a = await make_alliance(db, points=100)
    source, target = a.programs
    args = {"from_membership_id": a.memberships[0].id, "to_membership_id": a.memberships[1].id}
    with pytest.raises(NoExchangeRate):
        await exchange_points(db, a.member, points=10, idempotency_key=next(keys), **args)
    await rate(db, source, target, "1", min_points=10, max_points=50, fee_points=10)
    for points in (9, 51):
        with pytest.raises(InvalidInput):
            await exchange_points(db, a.member, points=points, idempotency_key=next(keys), **args)
    with pytest.raises(InvalidInput, match="too few points"):
        await exchange_points(db, a.member, points=10, idempotency_key=next(keys), **args)
    await set_exchange_opt_out(db, merchant_actor(target.merchant_id), from_program_id=source.id,
                               to_program_id=target.id, opted_out=True)  # fmt: skip
    with pytest.raises(ExchangeClosed):
        await exchange_points(db, a.member, points=20, idempotency_key=next(keys), **args)
    await set_exchange_opt_out(db, merchant_actor(target.merchant_id), from_program_id=source.id,
                               to_program_id=target.id, opted_out=False)  # fmt: skip
    await withdraw_rate(db, OPERATOR, from_program_id=source.id, to_program_id=target.id)
    with pytest.raises(NoExchangeRate):
        await exchange_points(db, a.member, points=20, idempotency_key=next(keys), **args)
    await rate(db, source, target, "1")
    with pytest.raises(InsufficientPoints):
        await exchange_points(db, a.member, points=101, idempotency_key=next(keys), **args)
    stranger = await make_membership(db, target)
    with pytest.raises(NotFound):
        await exchange_points(db, a.member, points=10, idempotency_key=next(keys),
                              from_membership_id=a.memberships[0].id,
                              to_membership_id=stranger.id)  # fmt: skip
    with pytest.raises(Forbidden):
        await exchange_points(db, merchant_actor(source.merchant_id), points=10,
                              idempotency_key=next(keys), **args)  # fmt: skip
    with pytest.raises(Forbidden):
        await set_exchange_opt_out(db, merchant_actor(stranger_merchant := 10**9),
                                   from_program_id=source.id, to_program_id=target.id,
                                   opted_out=True)  # fmt: skip
    assert stranger_merchant
    assert await balance(db, a.memberships[0]) == 100
    assert await db.fetch_one("SELECT count(*) FROM settlement_obligation") == (0,)
    other = member_actor(stranger, target.merchant_id)
    with pytest.raises(NotFound):
        await quote_exchange(db, other, points=10, **args)


async def test_concurrent_exchanges_from_one_account_never_overdraw(db: Database) -> None:
    a = await make_alliance(db, points=1000)
    await rate(db, a.programs[0], a.programs[1], "3/2")
    args = {"from_membership_id": a.memberships[0].id, "to_membership_id": a.memberships[1].id}

    async def one() -> bool:
        try:
            await exchange_points(db, a.member, points=30, idempotency_key=next(keys), **args)
        except InsufficientPoints:
            return False
        return True

    done = await asyncio.gather(*(one() for _ in range(100)))
    assert done.count(True) == 33
    assert await balance(db, a.memberships[0]) == 10
    assert await balance(db, a.memberships[1]) == 1000 + 33 * 45


async def test_opposite_exchanges_of_one_member_do_not_deadlock(db: Database) -> None:
    a = await make_alliance(db, points=1000)
    await rate(db, a.programs[0], a.programs[1], "1")
    await rate(db, a.programs[1], a.programs[0], "1")
    there = {"from_membership_id": a.memberships[0].id, "to_membership_id": a.memberships[1].id}
    back = {"from_membership_id": a.memberships[1].id, "to_membership_id": a.memberships[0].id}
    await asyncio.gather(*(
        exchange_points(db, a.member, points=10, idempotency_key=next(keys),
                        **(there if n % 2 else back))
        for n in range(40)
    ))  # fmt: skip
    assert await balance(db, a.memberships[0]) == 1000
    assert await balance(db, a.memberships[1]) == 1000


async def test_exchanged_points_repay_clawback_debt_first(db: Database) -> None:
    from tests.factories import give_points, link_membership, make_program
    from tests.ledger.test_reversal import _account, _buy, _refund, _shop, _spend

    shop, actor, target = await _shop(db)
    await _buy(db, actor, target, "J", "100.00")
    await _spend(db, actor, target, 100)
    await _refund(db, actor, "J", "J1", "100.00")
    assert await _account(db, target) == (0, 100)
    source_program = await make_program(db)
    source = await link_membership(db, source_program, target.member_id)
    await give_points(db, source, source_program, 200)
    await rate(db, source_program, shop, "1")
    member = member_actor(target, shop.merchant_id)
    args = {"from_membership_id": source.id, "to_membership_id": target.id}
    first = await exchange_points(db, member, points=60, idempotency_key=next(keys), **args)
    assert (first.to_balance, await _account(db, target)) == (0, (0, 40))
    second = await exchange_points(db, member, points=50, idempotency_key=next(keys), **args)
    assert (second.to_balance, await _account(db, target)) == (10, (10, 0))
    again = await exchange_points(db, member, points=50, idempotency_key=next(keys), **args)
    assert again.to_balance == 60
