"""Any sequence of earns, awards, spends, refunds and expiry keeps the ledger whole."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.db.engine import Database
from alliance.errors import InsufficientPoints, InvalidInput
from alliance.ledger.expiry import expire_points
from alliance.ledger.reversal import reverse_purchase
from alliance.ledger.service import award_points, spend_points
from alliance.ledger.verify import verify_ledger
from alliance.programs.models import ExpiryPolicy
from alliance.rules.earning import record_purchase
from alliance.rules.engine import Purchase
from alliance.rules.models import RuleKind
from alliance.rules.service import ClawbackPolicy, set_earning_policy
from alliance.rules.terms import TermsInput
from tests.factories import backdated_rule, make_membership, make_program, merchant_actor

operations = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 300)),
        st.tuples(st.just("award"), st.integers(1, 300)),
        st.tuples(st.just("spend"), st.integers(1, 400)),
        st.tuples(st.just("refund"), st.integers(0, 5), st.integers(1, 100)),
        st.tuples(st.just("expire")),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(steps=operations, policy=st.sampled_from(list(ClawbackPolicy)))
async def test_invariants_hold_after_any_sequence(
    db: Database, steps: list[tuple[Any, ...]], policy: ClawbackPolicy
) -> None:
    program = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=30)
    actor = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await set_earning_policy(db, actor, program_id=program.id, clawback_policy=policy)
    membership = await make_membership(db, program)
    orders: list[tuple[str, int]] = []  # (order id, amount)
    for n, step in enumerate(steps):
        match step:
            case ("earn", amount):
                order = f"o{n}"
                await record_purchase(db, actor, membership_id=membership.id, order_id=order,
                                      purchase=Purchase(Decimal(amount), datetime.now(UTC)),
                                      currency="CNY")  # fmt: skip
                orders.append((order, amount))
            case ("award", points):
                await award_points(db, actor, membership_id=membership.id, points=points,
                                   reason="p", idempotency_key=f"a{n}")  # fmt: skip
            case ("spend", points):
                with contextlib.suppress(InsufficientPoints):
                    await spend_points(db, actor, membership_id=membership.id, points=points,
                                       reason="p", idempotency_key=f"s{n}")  # fmt: skip
            case ("refund", which, percent) if orders:
                order, amount = orders[which % len(orders)]
                refund = (Decimal(amount) * percent / 100).quantize(Decimal("0.01"))
                with contextlib.suppress(InvalidInput):  # more than is left of the order
                    await reverse_purchase(
                        db,
                        actor,
                        order_id=order,
                        refund_id=f"r{n}",
                        amount=max(refund, Decimal("0.01")),
                        currency="CNY",
                    )
            case ("expire",):
                await expire_points(db, now=datetime.now(UTC) + timedelta(days=400))
    assert await verify_ledger(db) == []
    row = await db.fetch_one(
        "SELECT a.balance, a.debt, (SELECT coalesce(sum(remaining), 0) FROM lot l"
        " WHERE l.account_id = a.id) FROM account a WHERE a.membership_id = %(m)s",
        {"m": membership.id},
    )
    assert row is not None
    balance, debt, in_lots = row
    assert balance == in_lots
    assert balance == 0 or debt == 0, "a credit repays debt before it adds to the balance"
