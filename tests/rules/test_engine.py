"""The rules engine alone: every rule type, their combinations, and its properties."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance.rules.engine import (
    Conditions,
    MemberProfile,
    OrderLine,
    Promotion,
    Purchase,
    PurchaseRule,
    Rounding,
    Stacking,
    TierFactor,
    evaluate,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A Friday, 16:30 UTC = Saturday 00:30 in Shanghai.
FRIDAY_NIGHT_UTC = datetime(2026, 11, 27, 16, 30, tzinfo=UTC)
WEDNESDAY = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)


def rule(rate: str = "1", rounding: Rounding = Rounding.FLOOR, **conditions: Any) -> PurchaseRule:
    return PurchaseRule(1, "base", 1, "Base", Decimal(rate), rounding, Conditions(**conditions))


def promo(
    rule_id: int,
    multiplier: str | None = None,
    bonus: int = 0,
    priority: int = 0,
    **conditions: Any,
) -> Promotion:
    factor = None if multiplier is None else Decimal(multiplier)
    return Promotion(
        rule_id,
        f"promo-{rule_id}",
        1,
        f"Promo {rule_id}",
        factor,
        bonus,
        Conditions(**conditions),
        priority,
    )


def earn(
    amount: str,
    rules: list[PurchaseRule],
    promotions: list[Promotion] = [],  # noqa: B006 - read only
    *,
    stacking: Stacking = Stacking.BEST_OF,
    when: datetime = WEDNESDAY,
    channel: str | None = None,
    lines: tuple[OrderLine, ...] = (),
) -> int:
    purchase = Purchase(Decimal(amount), when, channel, lines)
    breakdown = evaluate(purchase, rules, promotions, stacking=stacking, zone=SHANGHAI)
    assert breakdown.points == sum(line.points for line in breakdown.contributions)
    return breakdown.points


@pytest.mark.parametrize(
    ("amount", "rate", "rounding", "points"),
    [
        ("99.99", "1", Rounding.FLOOR, 99),
        ("99.99", "1", Rounding.HALF_UP, 100),
        ("99.49", "1", Rounding.HALF_UP, 99),
        ("99.01", "1", Rounding.CEILING, 100),
        ("100", "0.1", Rounding.FLOOR, 10),
        ("15", "2.5", Rounding.FLOOR, 37),
        ("0.5", "1", Rounding.FLOOR, 0),
    ],
)
def test_rate_and_rounding(amount: str, rate: str, rounding: Rounding, points: int) -> None:
    assert earn(amount, [rule(rate, rounding)]) == points


def test_minimum_amount() -> None:
    assert earn("49.99", [rule(minimum_amount=Decimal(50))]) == 0
    assert earn("50", [rule(minimum_amount=Decimal(50))]) == 50


def test_channels() -> None:
    base = rule(channels=frozenset({"app"}))
    assert earn("10", [base], channel="app") == 10
    assert earn("10", [base], channel="pos") == 0
    assert earn("10", [base]) == 0


LINES = (
    OrderLine("a", Decimal("30"), "food"),
    OrderLine("b", Decimal("50"), "wine"),
    OrderLine("c", Decimal("20"), "gift-card"),
)


def test_categories_and_exclusions() -> None:
    assert earn("100", [rule(excluded_categories=frozenset({"gift-card"}))], lines=LINES) == 80
    assert earn("100", [rule(categories=frozenset({"wine"}))], lines=LINES) == 50
    # No lines: no categories to match, so a category-limited rule earns nothing.
    assert earn("100", [rule(categories=frozenset({"wine"}))]) == 0
    assert earn("100", [rule(excluded_categories=frozenset({"wine"}))]) == 100


def test_purchase_rules_add_up() -> None:
    wine = PurchaseRule(2, "wine", 1, "Wine x2", Decimal(2), Rounding.FLOOR,
                        Conditions(categories=frozenset({"wine"})))  # fmt: skip
    assert earn("100", [rule(), wine], lines=LINES) == 100 + 100


@pytest.mark.parametrize(
    ("stacking", "points"),
    [
        (Stacking.BEST_OF, 200),  # ×2 only
        (Stacking.ADDITIVE, 250),  # 1 + 1 + 0.5
        (Stacking.MULTIPLICATIVE, 300),  # ×2 ×1.5
    ],
)
def test_multiplier_stacking(stacking: Stacking, points: int) -> None:
    promotions = [promo(10, "2"), promo(11, "1.5")]
    assert earn("100", [rule()], promotions, stacking=stacking) == points


def test_best_of_prefers_priority_on_ties() -> None:
    purchase = Purchase(Decimal("100"), WEDNESDAY)
    breakdown = evaluate(purchase, [rule()], [promo(10, "2"), promo(11, "2", priority=5)],
                         stacking=Stacking.BEST_OF, zone=SHANGHAI)  # fmt: skip
    assert [line.rule_id for line in breakdown.contributions] == [1, 11]


def test_bonus_adds_and_needs_conditions() -> None:
    launch = promo(20, bonus=88, minimum_amount=Decimal(30))
    assert earn("40", [rule()], [launch]) == 40 + 88
    assert earn("20", [rule()], [launch]) == 20


def test_multiplier_does_not_touch_bonus() -> None:
    assert earn("10", [rule()], [promo(10, "3"), promo(20, bonus=5)]) == 30 + 5


def test_weekend_is_shanghai_weekend() -> None:
    weekend = promo(30, "2", weekdays=frozenset({6, 7}))
    # Friday night in UTC is Saturday morning in Shanghai: double points.
    assert earn("10", [rule()], [weekend], when=FRIDAY_NIGHT_UTC) == 20
    assert earn("10", [rule()], [weekend], when=WEDNESDAY) == 10


def test_nothing_earned_means_no_multiplier_or_category_bonus() -> None:
    wine_bonus = promo(40, bonus=10, categories=frozenset({"wine"}))
    assert earn("10", [rule()], [wine_bonus]) == 10
    assert earn("100", [rule()], [wine_bonus], lines=LINES) == 110


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)


@given(amount=amounts, extra=amounts, stacking=st.sampled_from(list(Stacking)))
def test_points_never_decrease_with_the_amount(
    amount: Decimal, extra: Decimal, stacking: Stacking
) -> None:
    rules = [rule("1.5", Rounding.HALF_UP, minimum_amount=Decimal(20))]
    promotions = [promo(10, "2", minimum_amount=Decimal(100)), promo(11, "1.25"),
                  promo(12, bonus=7, minimum_amount=Decimal(50))]  # fmt: skip

    def points(total: Decimal) -> int:
        return evaluate(Purchase(total, WEDNESDAY), rules, promotions, stacking=stacking,
                        zone=SHANGHAI).points  # fmt: skip

    assert 0 <= points(amount) <= points(amount + extra)


GOLD = MemberProfile(tier=TierFactor("gold", "黄金", Decimal("1.5")), segments=frozenset({"vip"}))


@pytest.mark.parametrize(
    ("stacking", "points", "kinds"),
    [
        (Stacking.BEST_OF, 200, ["purchase", "multiplier"]),  # ×2 beats the tier's ×1.5
        (Stacking.ADDITIVE, 250, ["purchase", "multiplier", "tier"]),  # 1 + 1 + 0.5
        (Stacking.MULTIPLICATIVE, 300, ["purchase", "multiplier", "tier"]),  # ×2 ×1.5
    ],
)
def test_tier_multiplier_stacks_with_promotions(
    stacking: Stacking, points: int, kinds: list[str]
) -> None:
    purchase = Purchase(Decimal("100"), WEDNESDAY)
    breakdown = evaluate(purchase, [rule()], [promo(10, "2")], stacking=stacking, zone=SHANGHAI,
                         profile=GOLD)  # fmt: skip
    assert breakdown.points == points
    assert [line.kind for line in breakdown.contributions] == kinds
    assert breakdown.points == sum(line.points for line in breakdown.contributions)


def test_tier_multiplier_alone() -> None:
    purchase = Purchase(Decimal("100"), WEDNESDAY)
    breakdown = evaluate(purchase, [rule()], [], stacking=Stacking.BEST_OF, zone=SHANGHAI,
                         profile=GOLD)  # fmt: skip
    tier_line = breakdown.contributions[-1]
    assert (breakdown.points, tier_line.code, tier_line.rule_id) == (150, "tier:gold", None)


GOLD_NO_BONUS = MemberProfile(tier=TierFactor("gold", "黄金", Decimal(1)),
                              segments=frozenset({"vip"}))  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "profile", "points"),
    [
        ({"tiers": frozenset({"gold"})}, GOLD_NO_BONUS, 150),
        ({"tiers": frozenset({"gold"})}, MemberProfile(), 100),
        ({"segments": frozenset({"vip", "staff"})}, GOLD_NO_BONUS, 150),
        ({"segments": frozenset({"staff"})}, GOLD_NO_BONUS, 100),
        ({"segments": frozenset({"vip"})}, MemberProfile(segments=frozenset({"vip"})), 150),
    ],
)
def test_promotion_audiences(
    conditions: dict[str, Any], profile: MemberProfile, points: int
) -> None:
    purchase = Purchase(Decimal("100"), WEDNESDAY)
    breakdown = evaluate(purchase, [rule()], [promo(10, bonus=50, **conditions)],
                         stacking=Stacking.BEST_OF, zone=SHANGHAI, profile=profile)  # fmt: skip
    assert breakdown.points == points
