"""Tiers in earning: purchases qualify and upgrade on the event, the tier multiplies the
earn under the stacking policy, a refund undoes its purchase's contribution."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alliance.db.engine import Database
from alliance.ledger.reversal import reverse_purchase
from alliance.rules.earning import EarnResult, record_purchase
from alliance.rules.engine import Purchase, Stacking
from alliance.rules.models import RuleKind
from alliance.rules.service import set_promotion_stacking
from alliance.rules.terms import ConditionsInput, TermsInput
from alliance.tiers.queries import standings_by_membership
from tests.factories import (
    backdated_rule,
    make_ladder,
    make_membership,
    make_program,
    merchant_actor,
)


async def _tiered(db: Database):  # type: ignore[no-untyped-def]
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await make_ladder(db, program)  # 普通 0 / 黄金 1000 ×1.5 / 白金 5000 ×2, by spend
    return program, actor, await make_membership(db, program)


async def _buy(db: Database, actor, membership, order: str, amount: int) -> EarnResult:  # type: ignore[no-untyped-def]
    return await record_purchase(db, actor, membership_id=membership.id, order_id=order,
                                 purchase=Purchase(Decimal(amount), datetime.now(UTC)),
                                 currency="CNY")  # fmt: skip


async def _tier(db: Database, actor, membership) -> tuple[str, Decimal]:  # type: ignore[no-untyped-def]
    standing = (await standings_by_membership(db, actor, [membership.id]))[membership.id]
    return standing.held.code, standing.qualifying_total


async def test_the_purchase_that_reaches_a_tier_upgrades_and_the_next_earns_more(
    db: Database,
) -> None:
    _, actor, member = await _tiered(db)
    first = await _buy(db, actor, member, "a", 800)
    assert first.breakdown.points == 800
    assert await _tier(db, actor, member) == ("regular", Decimal(800))
    second = await _buy(db, actor, member, "b", 300)  # reaches 1,100: gold, from this event
    assert second.breakdown.points == 300
    assert (await _tier(db, actor, member))[0] == "gold"

    third = await _buy(db, actor, member, "c", 100)
    assert third.breakdown.points == 150
    tier_line = third.breakdown.contributions[-1]
    assert (tier_line.kind, tier_line.code, tier_line.points) == ("tier", "tier:gold", 50)
    # Qualifying points would count the tier's own line out; spend counts the amount.
    assert await _tier(db, actor, member) == ("gold", Decimal(1200))


async def test_tier_and_promotion_multipliers_stack_by_policy(db: Database) -> None:
    program, actor, member = await _tiered(db)
    await backdated_rule(db, program, "double", RuleKind.PROMOTION,
                         TermsInput(multiplier=Decimal(2)))  # fmt: skip
    await _buy(db, actor, member, "up", 1000)  # to gold (×2 promotion: 2,000 points)
    expected = {Stacking.BEST_OF: 200, Stacking.ADDITIVE: 250, Stacking.MULTIPLICATIVE: 300}
    for n, (stacking, points) in enumerate(expected.items()):
        await set_promotion_stacking(db, actor, program_id=program.id, stacking=stacking)
        assert (await _buy(db, actor, member, f"s{n}", 100)).breakdown.points == points


async def test_a_tier_audience_promotion(db: Database) -> None:
    program, actor, member = await _tiered(db)
    other = await make_membership(db, program)
    await backdated_rule(db, program, "gold-bonus", RuleKind.PROMOTION, TermsInput(
        bonus_points=100, conditions=ConditionsInput(tiers=["gold", "platinum"])))  # fmt: skip
    await _buy(db, actor, member, "up", 1000)
    gold = await _buy(db, actor, member, "g", 10)
    regular = await _buy(db, actor, other, "r", 10)
    assert (gold.breakdown.points, regular.breakdown.points) == (15 + 100, 10)


async def test_a_refund_undoes_its_purchase_contribution(db: Database) -> None:
    _, actor, member = await _tiered(db)
    await _buy(db, actor, member, "big", 1200)
    assert await _tier(db, actor, member) == ("gold", Decimal(1200))
    await reverse_purchase(db, actor, order_id="big", refund_id="r1", amount=Decimal(300),
                           currency="CNY")  # fmt: skip
    # The total falls below gold; the downgrade waits for the scheduled review.
    assert await _tier(db, actor, member) == ("gold", Decimal(900))
