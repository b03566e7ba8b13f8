"""Evaluating earning rules: pure computation, no I/O.

A purchase earns from every applicable *purchase rule* (points per currency unit
on the order lines it covers, rounded per rule), then *promotions* apply:
multipliers combine by the program's stacking policy and act on the base points;
fixed bonuses add. Every contribution is a line of the breakdown, so a member can
see why they got what they got, and `previewEarn` shows exactly what an earn will post.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo


class Rounding(enum.StrEnum):
    FLOOR = "floor"
    HALF_UP = "half_up"
    CEILING = "ceiling"


_ROUNDING = {
    Rounding.FLOOR: ROUND_FLOOR,
    Rounding.HALF_UP: ROUND_HALF_UP,
    Rounding.CEILING: ROUND_CEILING,
}


class Stacking(enum.StrEnum):
    """How several applicable multipliers combine."""

    BEST_OF = "best_of"
    """Only the largest factor applies (ties: the higher priority)."""
    ADDITIVE = "additive"
    """Extra factors add up: ×2 and ×1.5 make ×2.5."""
    MULTIPLICATIVE = "multiplicative"
    """Factors multiply: ×2 and ×1.5 make ×3."""


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    amount: Decimal
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Purchase:
    amount: Decimal
    occurred_at: datetime
    channel: str | None = None
    lines: tuple[OrderLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Conditions:
    """When a rule applies; None means no restriction."""

    minimum_amount: Decimal = Decimal(0)
    channels: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    excluded_categories: frozenset[str] = frozenset()
    weekdays: frozenset[int] | None = None
    """ISO weekdays (1 Monday … 7 Sunday) in the alliance time zone, e.g. {6, 7}."""

    def admits(self, purchase: Purchase, zone: ZoneInfo) -> bool:
        if purchase.amount < self.minimum_amount:
            return False
        if self.channels is not None and purchase.channel not in self.channels:
            return False
        if self.weekdays is not None:
            return purchase.occurred_at.astimezone(zone).isoweekday() in self.weekdays
        return True

    def eligible_amount(self, purchase: Purchase) -> Decimal:
        """The part of the order the rule counts: the lines of covered categories."""
        if not purchase.lines:
            # An order without lines has no categories: it counts unless the rule
            # is limited to some categories.
            return purchase.amount if self.categories is None else Decimal(0)
        return sum(
            (line.amount for line in purchase.lines if self._covers(line.category)),
            Decimal(0),
        )

    def _covers(self, category: str | None) -> bool:
        if category is not None and category in self.excluded_categories:
            return False
        return self.categories is None or category in self.categories


@dataclass(frozen=True, slots=True)
class PurchaseRule:
    id: int
    code: str
    version: int
    name: str
    points_per_unit: Decimal
    rounding: Rounding = Rounding.FLOOR
    conditions: Conditions = field(default_factory=Conditions)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Promotion:
    id: int
    code: str
    version: int
    name: str
    multiplier: Decimal | None = None
    """×factor on the base points (e.g. 2 for double points)."""
    bonus_points: int = 0
    """Fixed points added when the promotion applies."""
    conditions: Conditions = field(default_factory=Conditions)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Contribution:
    """One line of a breakdown: which rule version gave how many points, and how."""

    rule_id: int
    code: str
    version: int
    name: str
    kind: str
    """`purchase`, `multiplier` or `bonus`."""
    points: int
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id, "code": self.code, "version": self.version,
            "name": self.name, "kind": self.kind, "points": self.points, "detail": self.detail,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Breakdown:
    points: int
    contributions: tuple[Contribution, ...]

    def as_json(self) -> dict[str, Any]:
        return {"points": self.points, "lines": [c.as_json() for c in self.contributions]}


def evaluate(
    purchase: Purchase,
    rules: Sequence[PurchaseRule],
    promotions: Sequence[Promotion],
    *,
    stacking: Stacking,
    zone: ZoneInfo,
) -> Breakdown:
    """The points `purchase` earns under the given rule versions (all assumed in force)."""
    lines: list[Contribution] = []
    base = 0
    for rule in sorted(rules, key=lambda r: (-r.priority, r.id)):
        if not rule.conditions.admits(purchase, zone):
            continue
        eligible = rule.conditions.eligible_amount(purchase)
        points = int((eligible * rule.points_per_unit).to_integral_value(_ROUNDING[rule.rounding]))
        if points > 0:
            base += points
            lines.append(Contribution(
                rule.id, rule.code, rule.version, rule.name, "purchase", points,
                f"{eligible} × {rule.points_per_unit} per unit, {rule.rounding.value}",
            ))  # fmt: skip

    applicable = [
        p for p in sorted(promotions, key=lambda p: (-p.priority, p.id))
        if p.conditions.admits(purchase, zone) and p.conditions.eligible_amount(purchase) > 0
    ]  # fmt: skip
    multiplied = [p for p in applicable if p.multiplier is not None and p.multiplier > 1]
    extra = 0
    if base and multiplied:
        extra_lines = _multiply(base, multiplied, stacking)
        extra = sum(line.points for line in extra_lines)
        lines.extend(extra_lines)
    for promotion in applicable:
        if promotion.bonus_points > 0:
            lines.append(Contribution(
                promotion.id, promotion.code, promotion.version, promotion.name, "bonus",
                promotion.bonus_points, f"+{promotion.bonus_points} bonus",
            ))  # fmt: skip
            extra += promotion.bonus_points
    return Breakdown(base + extra, tuple(lines))


def _multiply(base: int, promotions: Sequence[Promotion], stacking: Stacking) -> list[Contribution]:
    """Extra points from multipliers on `base`, rounded down, one line per promotion applied."""

    def line(promotion: Promotion, points: int, detail: str) -> Contribution:
        return Contribution(promotion.id, promotion.code, promotion.version, promotion.name,
                            "multiplier", points, detail)  # fmt: skip

    factors = [(p, p.multiplier) for p in promotions if p.multiplier is not None]
    if stacking is Stacking.BEST_OF:
        best, factor = max(factors, key=lambda pair: pair[1])  # first max: highest priority
        points = int((base * (factor - 1)).to_integral_value(ROUND_FLOOR))
        return [line(best, points, f"×{factor} on {base} (best of {len(factors)})")]
    if stacking is Stacking.ADDITIVE:
        return [
            line(p, int((base * (f - 1)).to_integral_value(ROUND_FLOOR)), f"+{f - 1}× on {base}")
            for p, f in factors
        ]
    # Multiplicative: each factor applies on top of the previous ones; each line is the
    # increase it brings, so the lines still sum to the total.
    lines = []
    running = Decimal(base)
    for promotion, factor in factors:
        after = running * factor
        increase = int(after.to_integral_value(ROUND_FLOOR)) - int(
            running.to_integral_value(ROUND_FLOOR)
        )
        lines.append(line(promotion, increase, f"×{factor} on {running.normalize()}"))
        running = after
    return lines
