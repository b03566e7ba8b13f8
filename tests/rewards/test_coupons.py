"""Coupon codes: random, unique by index (a collision retries), single use at the counter."""

from __future__ import annotations

import re

import pytest

from alliance.db.engine import Database
from alliance.errors import InvalidTransition, NotFound
from alliance.rewards import redemptions
from alliance.rewards.redemptions import (
    COUPON_ALPHABET,
    coupons_by_redemption,
    fulfil_redemption,
    new_coupon_code,
    redeem_coupon,
)
from tests.factories import OPERATOR, make_program, merchant_actor
from tests.rewards.helpers import account, reserve, setup

CODE = re.compile(rf"^[{COUPON_ALPHABET}]{{4}}(-[{COUPON_ALPHABET}]{{4}}){{3}}$")


async def test_100_000_codes_are_distinct_and_the_index_takes_them_all(db: Database) -> None:
    codes = [new_coupon_code() for _ in range(100_000)]
    assert all(CODE.match(code) for code in codes)
    assert len(set(codes)) == len(codes)
    # The coupon table's own unique index, on a copy of the table without its keys.
    async with db.connection() as conn, conn.transaction():
        await conn.execute("CREATE TEMP TABLE codes (LIKE coupon INCLUDING ALL) ON COMMIT DROP")
        async with conn.cursor().copy("COPY codes (redemption_id, program_id, code, valid_until)"
                                      " FROM STDIN") as copy:  # fmt: skip
            for n, code in enumerate(codes):
                await copy.write_row((n, 1, code, "2030-01-01T00:00:00Z"))
        cursor = await conn.execute("SELECT count(DISTINCT code), count(*) FROM codes")
        assert await cursor.fetchone() == (100_000, 100_000)
        indexes = await conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'codes'"
            " AND indexdef LIKE 'CREATE UNIQUE INDEX % (code)'"
        )
        assert await indexes.fetchone() == (1,)


async def test_a_colliding_code_is_replaced(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    program, reward, membership = await setup(db)
    merchant = merchant_actor(program.merchant_id)
    first = (await reserve(db, program, reward, membership)).redemption
    await fulfil_redemption(db, merchant, redemption_id=first.id)
    taken = (await coupons_by_redemption(db, OPERATOR, [first.id]))[first.id].code
    fresh = iter([taken, taken, taken, taken, taken, "FRESH-CODE-0000-0001", taken])
    monkeypatch.setattr(redemptions, "new_coupon_code", lambda: next(fresh))
    second = (await reserve(db, program, reward, membership)).redemption
    await fulfil_redemption(db, merchant, redemption_id=second.id)
    coupons = await coupons_by_redemption(db, OPERATOR, [second.id])
    assert coupons[second.id].code == "FRESH-CODE-0000-0001"


async def test_a_coupon_is_used_once_at_its_merchant(db: Database) -> None:
    program, reward, membership = await setup(db, points=300)
    merchant = merchant_actor(program.merchant_id)
    red = (await reserve(db, program, reward, membership)).redemption
    await fulfil_redemption(db, merchant, redemption_id=red.id)
    code = (await coupons_by_redemption(db, OPERATOR, [red.id]))[red.id].code
    stranger = merchant_actor((await make_program(db)).merchant_id)
    with pytest.raises(NotFound):
        await redeem_coupon(db, stranger, code=code, store="elsewhere")
    used = await redeem_coupon(db, merchant, code=code.lower(), store="Store 7")
    assert used.redemption_id == red.id
    coupon = (await coupons_by_redemption(db, OPERATOR, [red.id]))[red.id]
    assert (coupon.status, coupon.used_store, coupon.used_merchant_id) == (
        "used", "Store 7", program.merchant_id)  # fmt: skip
    assert await account(db, membership) == (200, 0)  # the redemption was completed
    with pytest.raises(InvalidTransition):
        await redeem_coupon(db, merchant, code=code, store="Store 7")
    with pytest.raises(NotFound):
        await redeem_coupon(db, merchant, code="NOPE-NOPE-NOPE-NOPE", store="Store 7")
