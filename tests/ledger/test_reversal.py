"""Refunds claw back what a purchase earned: from its lots, then by policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.errors import (
    IdempotencyKeyReused,
    InsufficientPoints,
    InvalidInput,
    NotFound,
    RetryLater,
)
from alliance.ledger.reversal import Reversal, reverse_purchase
from alliance.ledger.service import spend_points
from alliance.members.queries import MembershipRecord
from alliance.rules.earning import record_purchase
from alliance.rules.engine import Purchase
from alliance.rules.models import RuleKind
from alliance.rules.service import ClawbackPolicy, set_earning_policy
from alliance.rules.terms import TermsInput
from tests.factories import (
    backdated_rule,
    give_points,
    make_membership,
    make_program,
    merchant_actor,
)
from tests.graphql.helpers import ok


async def _shop(db: Database, policy: ClawbackPolicy = ClawbackPolicy.DEBT, **program: Any):  # type: ignore[no-untyped-def]
    prog = await make_program(db, **program)
    actor = merchant_actor(prog.merchant_id)
    await backdated_rule(db, prog, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await set_earning_policy(db, actor, program_id=prog.id, clawback_policy=policy)
    membership = await make_membership(db, prog)
    return prog, actor, membership


async def _buy(db: Database, actor: Any, membership: MembershipRecord, order: str,
               amount: str) -> int:  # fmt: skip
    result = await record_purchase(
        db, actor, membership_id=membership.id, order_id=order,
        purchase=Purchase(Decimal(amount), datetime.now(UTC) - timedelta(minutes=1)),
        currency="CNY",
    )  # fmt: skip
    return result.breakdown.points


async def _refund(db: Database, actor: Any, order: str, refund: str, amount: str) -> Reversal:
    return await reverse_purchase(db, actor, order_id=order, refund_id=refund,
                                  amount=Decimal(amount), currency="CNY")  # fmt: skip


async def _account(db: Database, membership: MembershipRecord) -> tuple[int, int]:
    row = await db.fetch_one(
        "SELECT balance, debt FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0]), int(row[1])


async def _spend(db: Database, actor: Any, membership: MembershipRecord, points: int) -> None:
    await spend_points(db, actor, membership_id=membership.id, points=points, reason="spend",
                       idempotency_key=f"spend-{points}-{membership.id}")  # fmt: skip


class TestRefunds:
    async def test_a_full_refund_takes_back_what_the_order_earned(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        assert await _buy(db, actor, membership, "A", "120.00") == 120
        done = await _refund(db, actor, "A", "R1", "120.00")
        assert (done.clawback, done.taken, done.debt, done.written_off) == (120, 120, 0, 0)
        assert done.balance_after == 0
        assert done.entry_id is not None
        assert await _account(db, membership) == (0, 0)

    async def test_partial_refunds_add_up_to_exactly_what_was_earned(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        await _buy(db, actor, membership, "B", "100.00")
        figures = []
        for n, amount in enumerate(("0.50", "30.00", "30.00", "39.50")):
            figures.append((await _refund(db, actor, "B", f"B{n}", amount)).clawback)
        # floor(100 × refunded so far / 100) less what was taken before
        assert figures == [0, 30, 30, 40]
        assert await _account(db, membership) == (0, 0)

    async def test_refunds_cannot_exceed_the_order(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        await _buy(db, actor, membership, "C", "50.00")
        await _refund(db, actor, "C", "C1", "40.00")
        with pytest.raises(InvalidInput, match=r"would total 60\.00"):
            await _refund(db, actor, "C", "C2", "20.00")
        assert await _account(db, membership) == (10, 0)

    async def test_a_refund_is_idempotent_by_refund_id(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        await _buy(db, actor, membership, "D", "80.00")
        first = await _refund(db, actor, "D", "D1", "40.00")
        again = await _refund(db, actor, "D", "D1", "40.00")
        assert again.replayed
        assert not first.replayed
        assert (again.transaction_id, again.clawback, again.entry_id) == (
            first.transaction_id, first.clawback, first.entry_id)  # fmt: skip
        with pytest.raises(IdempotencyKeyReused) as reused:
            await _refund(db, actor, "D", "D1", "41.00")
        assert reused.value.field == ("refundId",)
        assert await _account(db, membership) == (40, 0)

    async def test_concurrent_refunds_of_one_order_never_overshoot(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        await _buy(db, actor, membership, "E", "100.00")
        outcomes = await asyncio.gather(
            *(_refund(db, actor, "E", f"E{n}", "10.00") for n in range(15)),
            return_exceptions=True,
        )
        done = [o for o in outcomes if isinstance(o, Reversal)]
        refused = [o for o in outcomes if isinstance(o, InvalidInput | RetryLater)]
        assert len(done) == 10
        assert len(refused) == 5
        assert sum(d.clawback for d in done) == 100
        assert await _account(db, membership) == (0, 0)

    async def test_unknown_and_foreign_orders_are_not_found(self, db: Database) -> None:
        _, actor, membership = await _shop(db)
        await _buy(db, actor, membership, "F", "10.00")
        _, stranger, _ = await _shop(db)
        for who, order in ((actor, "nope"), (stranger, "F")):
            with pytest.raises(NotFound) as missing:
                await _refund(db, who, order, "F1", "1.00")
            assert missing.value.field == ("orderId",)

    async def test_pending_points_are_taken_back_in_the_returns_window(self, db: Database) -> None:
        _, actor, membership = await _shop(db, pending_days=14)
        await _buy(db, actor, membership, "G", "60.00")
        with pytest.raises(InsufficientPoints):
            await _spend(db, actor, membership, 1)
        done = await _refund(db, actor, "G", "G1", "60.00")
        assert done.taken == 60
        assert await _account(db, membership) == (0, 0)


class TestSpentPoints:
    async def test_debt_policy_takes_other_points_then_records_debt(self, db: Database) -> None:
        program, actor, membership = await _shop(db, ClawbackPolicy.DEBT)
        await _buy(db, actor, membership, "H", "100.00")
        await give_points(db, membership, program, 30)
        await _spend(db, actor, membership, 110)  # 20 left: the award's
        done = await _refund(db, actor, "H", "H1", "100.00")
        assert (done.taken, done.debt, done.written_off) == (20, 80, 0)
        assert (done.balance_after, done.debt_after) == (0, 80)
        assert await _account(db, membership) == (0, 80)

    async def test_future_credits_repay_the_debt_first(self, db: Database) -> None:
        program, actor, membership = await _shop(db, ClawbackPolicy.DEBT)
        await _buy(db, actor, membership, "J", "100.00")
        await _spend(db, actor, membership, 100)
        await _refund(db, actor, "J", "J1", "100.00")
        assert await _account(db, membership) == (0, 100)

        award = await give_points(db, membership, program, 60)
        assert (award.points, award.balance_after) == (60, 0)
        assert await _account(db, membership) == (0, 40)
        assert await _buy(db, actor, membership, "K", "50.00") == 50
        assert await _account(db, membership) == (10, 0)
        await _spend(db, actor, membership, 10)

    async def test_write_off_policy_absorbs_what_was_spent(self, db: Database) -> None:
        program, actor, membership = await _shop(db, ClawbackPolicy.WRITE_OFF)
        await _buy(db, actor, membership, "L", "100.00")
        await _spend(db, actor, membership, 70)  # the order's lot has 30 left
        await give_points(db, membership, program, 50)
        done = await _refund(db, actor, "L", "L1", "100.00")
        # Only the order's own points go back; the member's other points stay.
        assert (done.taken, done.debt, done.written_off) == (30, 0, 70)
        assert await _account(db, membership) == (50, 0)
        adjusted = await db.fetch_one(
            "SELECT sum(p.amount) FROM posting p JOIN account a ON a.id = p.account_id"
            " WHERE a.kind = 'adjustment' AND a.program_id = %(p)s", {"p": program.id},
        )  # fmt: skip
        assert adjusted is not None
        assert adjusted[0] == -70


async def test_graphql_refund_and_debt(db: Database) -> None:
    _, actor, membership = await _shop(db)
    await _buy(db, actor, membership, "Q", "90.00")
    await _spend(db, actor, membership, 90)
    data = await ok(db, actor, """mutation($input: ReversePurchaseInput!) {
        reversePurchase(input: $input) {
          reversal { refunded clawback taken debt writtenOff clawbackDebtAfter replayed
                     entry { points } membership { balance { points clawbackDebt } } }
          userErrors { code field } } }""",
        {"input": {"orderId": "Q", "refundId": "Q-1", "amount": "45.00"}})  # fmt: skip
    reversal = data["reversePurchase"]["reversal"]
    assert reversal == {
        "refunded": "45.00", "clawback": 45, "taken": 0, "debt": 45, "writtenOff": 0,
        "clawbackDebtAfter": 45, "replayed": False, "entry": None,
        "membership": {"balance": {"points": 0, "clawbackDebt": 45}},
    }  # fmt: skip
    refused = await ok(
        db,
        actor,
        """mutation {
        reversePurchase(input: {orderId: "Q", refundId: "Q-2", amount: "50.00"}) {
          reversal { clawback } userErrors { code field } } }""",
    )
    assert refused["reversePurchase"] == {
        "reversal": None,
        "userErrors": [{"code": "INVALID_INPUT", "field": None}],
    }
