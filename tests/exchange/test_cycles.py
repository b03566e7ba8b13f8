"""The cycle check accepts exactly the rate graphs with no profitable cycle (compared with
a brute-force search of every simple cycle), and rates are refused naming the cycle."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alliance.db.engine import Database
from alliance.errors import ProfitableCycle
from alliance.exchange.cycles import cycle_product, profitable_cycle
from tests.exchange.helpers import make_alliance, rate


def brute_force(edges: dict[tuple[int, int], Fraction]) -> bool:
    nodes = sorted({n for edge in edges for n in edge})
    for size in range(2, len(nodes) + 1):
        for chosen in itertools.permutations(nodes, size):
            if chosen[0] != min(chosen):
                continue
            path = [*chosen, chosen[0]]
            if all(pair in edges for pair in itertools.pairwise(path)) and (
                cycle_product(edges, path) > 1
            ):
                return True
    return False


factors = st.fractions(min_value=Fraction(1, 4), max_value=Fraction(4), max_denominator=12)
graphs = st.dictionaries(
    st.tuples(st.integers(0, 4), st.integers(0, 4)).filter(lambda e: e[0] != e[1]),
    factors,
    max_size=12,
)


@given(graphs)
@settings(max_examples=400, deadline=None)
def test_the_check_agrees_with_brute_force(edges: dict[tuple[int, int], Fraction]) -> None:
    found = profitable_cycle(edges)
    assert (found is not None) == brute_force(edges)
    if found is not None:
        assert found[0] == found[-1]
        assert cycle_product(edges, found) > 1


@pytest.mark.parametrize(
    ("there", "back", "fee", "refused"),
    [
        ("2", "1/2", Decimal(0), False),  # exactly even: allowed
        ("2", "51/100", Decimal(0), True),
        ("2", "51/100", Decimal(2), False),  # the fee takes the gain: 2 × 0.51 × 0.98 < 1
        ("3/2", "2/3", Decimal(0), False),
    ],
)
async def test_publishing_refuses_a_profitable_cycle_and_names_it(
    db: Database, there: str, back: str, fee: Decimal, refused: bool
) -> None:
    a = await make_alliance(db, points=0)
    p, q = a.programs
    await rate(db, p, q, there)
    if not refused:
        await rate(db, q, p, back, fee_percent=fee)
        return
    with pytest.raises(ProfitableCycle) as caught:
        await rate(db, q, p, back, fee_percent=fee)
    assert f"/{p.code}" in caught.value.message
    assert f"/{q.code}" in caught.value.message


async def test_a_rate_scheduled_later_is_checked_against_that_moment(db: Database) -> None:
    from datetime import UTC, datetime, timedelta

    a = await make_alliance(db, ("0.01", "0.01", "0.01"), points=0)
    p, q, r = a.programs
    later = datetime.now(UTC) + timedelta(days=1)
    await rate(db, p, q, "2")
    await rate(db, q, r, "1", valid_until=later)  # ends before the third rate starts
    await rate(db, r, p, "1", valid_from=later)
    with pytest.raises(ProfitableCycle):
        await rate(db, q, r, "1", valid_from=later + timedelta(hours=1))
