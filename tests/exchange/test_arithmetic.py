"""Rate arithmetic: the fee is rounded up, the points out down (floor for the member), and
the fraction left is the remainder; a table of cases, then random ones against exact
Fraction arithmetic."""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.db.engine import Database
from tests.exchange.helpers import make_alliance, rate


async def _terms(db: Database, source: int, target: int, points: int) -> tuple[int, int, Decimal]:
    row = await db.fetch_one(
        "SELECT fee, points_out, remainder FROM exchange_terms(%(s)s, %(t)s, %(p)s, now())",
        {"s": source, "t": target, "p": points},
    )
    assert row is not None
    return int(row[0]), int(row[1]), Decimal(row[2])


def expected(
    points: int, value: Fraction, percent: Decimal, fixed: int
) -> tuple[int, int, Decimal]:
    fee = math.ceil(points * Fraction(percent) / 100) + fixed
    out = (points - fee) * value
    whole = math.floor(out)
    rest = Decimal(out.numerator % out.denominator) / Decimal(out.denominator)
    return fee, whole, rest.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


@pytest.mark.parametrize(
    ("value", "percent", "fixed", "points", "fee", "out", "remainder"),
    [
        ("1", "0", 0, 100, 0, 100, "0"),
        ("1/3", "0", 0, 100, 0, 33, "0.333333"),
        ("2/3", "0", 0, 100, 0, 66, "0.666666"),
        ("1/3", "2.5", 1, 1000, 26, 324, "0.666666"),  # ceil(25) + 1; 974 / 3
        ("1/3", "2.5", 0, 1001, 26, 325, "0"),  # ceil(25.025) = 26; 975 / 3
        ("3/2", "1", 0, 7, 1, 9, "0"),  # ceil(0.07) = 1; 6 × 1.5
        ("1.25", "0", 0, 3, 0, 3, "0.75"),
        ("0.005", "0", 0, 399, 0, 1, "0.995"),
        ("100", "99.9999", 0, 10**9, 999_999_000, 100_000, "0"),
    ],
)
async def test_rate_arithmetic_table(
    db: Database,
    value: str,
    percent: str,
    fixed: int,
    points: int,
    fee: int,
    out: int,
    remainder: str,
) -> None:
    a = await make_alliance(db, points=0)
    await rate(
        db, a.programs[0], a.programs[1], value, fee_percent=Decimal(percent), fee_points=fixed
    )
    assert await _terms(db, a.programs[0].id, a.programs[1].id, points) == (
        fee,
        out,
        Decimal(remainder),
    )
    assert expected(points, Fraction(value), Decimal(percent), fixed) == (
        fee,
        out,
        Decimal(remainder),
    )


@given(
    numerator=st.integers(1, 10**6),
    denominator=st.integers(1, 10**6),
    percent=st.decimals(min_value=0, max_value=50, places=4),
    fixed=st.integers(0, 100),
    points=st.integers(200, 10**9),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_sql_terms_equal_exact_arithmetic(
    db: Database, numerator: int, denominator: int, percent: Decimal, fixed: int, points: int
) -> None:
    a = await make_alliance(db, points=0)
    value = Fraction(numerator, denominator)
    fee, out, rest = expected(points, value, percent, fixed)
    if out < 1:
        return
    await rate(
        db,
        a.programs[0],
        a.programs[1],
        f"{numerator}/{denominator}",
        fee_percent=percent,
        fee_points=fixed,
    )
    assert await _terms(db, a.programs[0].id, a.programs[1].id, points) == (fee, out, rest)
