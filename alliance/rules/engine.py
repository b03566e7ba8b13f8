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


class CapPeriod(enum.StrEnum):
    """Cap periods, cut in the alliance time zone."""

    DAY = "day"
    MONTH = "month"
    YEAR = "year"


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `points` per member per period, from one rule or from the whole program."""

    period: CapPeriod
    points: int

    def as_json(self) -> dict[str, Any]:
        return {"period": self.period.value, "points": self.points}


class Action(enum.StrEnum):
    SIGN_UP = "sign_up"
    FIRST_LOGIN = "first_login"
    DAILY_CHECK_IN = "daily_check_in"
    SHARE = "share"
    REFERRAL = "referral"
    SURVEY = "survey"
    BIRTHDAY = "birthday"
    CUSTOM = "custom"
    """A merchant-defined action, named by the rule's `custom_action`."""


class Frequency(enum.StrEnum):
    """How often a member is rewarded for an action (periods in the alliance time zone)."""

    ONCE = "once"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    PER_REFERENCE = "per_reference"
    """Once per reference given with the action: per survey, per shared item."""
    EVERY_TIME = "every_time"


FIXED_FREQUENCY = {
    Action.SIGN_UP: Frequency.ONCE,
    Action.FIRST_LOGIN: Frequency.ONCE,
    Action.DAILY_CHECK_IN: Frequency.DAY,
    Action.BIRTHDAY: Frequency.YEAR,
    Action.REFERRAL: Frequency.EVERY_TIME,  # each referee only once: the referral table
}
"""Actions whose frequency is part of their meaning."""


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

    @property
    def lines_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


@dataclass(frozen=True, slots=True)
class TierFactor:
    """The member's tier and its earning multiplier."""

    code: str
    name: str
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class MemberProfile:
    """What audiences and tier multipliers look at: read at the earn, when a rule needs it."""

    tier: TierFactor | None = None
    segments: frozenset[str] = frozenset()


NO_PROFILE = MemberProfile()


@dataclass(frozen=True, slots=True)
class Conditions:
    """When a rule applies; None means no restriction."""

    minimum_amount: Decimal = Decimal(0)
    channels: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    excluded_categories: frozenset[str] = frozenset()
    weekdays: frozenset[int] | None = None
    """ISO weekdays (1 Monday … 7 Sunday) in the alliance time zone, e.g. {6, 7}."""
    tiers: frozenset[str] | None = None
    """Audience: members in one of these tiers (codes)."""
    segments: frozenset[str] | None = None
    """Audience: members in at least one of these segments."""

    @property
    def has_audience(self) -> bool:
        return self.tiers is not None or self.segments is not None

    def admits(
        self, purchase: Purchase, zone: ZoneInfo, profile: MemberProfile = NO_PROFILE
    ) -> bool:
        if purchase.amount < self.minimum_amount:
            return False
        if self.tiers is not None and (profile.tier is None or profile.tier.code not in self.tiers):
            return False
        if self.segments is not None and not self.segments & profile.segments:
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
        if self.categories is None and not self.excluded_categories:
            return purchase.lines_total
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
    caps: tuple[Cap, ...] = ()


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
    caps: tuple[Cap, ...] = ()


@dataclass(frozen=True, slots=True)
class ActionRule:
    id: int
    code: str
    version: int
    name: str
    action: Action
    custom_action: str | None
    points: int
    """For the member who did the action (for a referral: the referrer)."""
    referee_points: int = 0
    """Referrals: for the member who was referred."""
    frequency: Frequency = Frequency.EVERY_TIME
    priority: int = 0
    caps: tuple[Cap, ...] = ()

    @property
    def claim(self) -> str:
        """The action as claims name it: `sign_up`, or `custom:<name>`."""
        return f"custom:{self.custom_action}" if self.action is Action.CUSTOM else self.action.value


@dataclass(frozen=True, slots=True)
class Contribution:
    """One line of a breakdown: which rule version gave how many points, and how."""

    rule_id: int | None
    """None on a program cap line."""
    code: str
    version: int | None
    name: str
    kind: str
    """`purchase`, `multiplier`, `bonus`, `action`, or `cap` (negative: what a cap cut)."""
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
    profile: MemberProfile = NO_PROFILE,
) -> Breakdown:
    """The points `purchase` earns under the given rule versions (all assumed in force).

    The member's tier multiplier is one more factor, combined with the promotions'
    multipliers by the same stacking policy (best-of: a ×2 weekend and a ×1.5 tier give ×2).
    """
    lines: list[Contribution] = []
    base = 0
    for rule in sorted(rules, key=lambda r: (-r.priority, r.id)):
        if not rule.conditions.admits(purchase, zone, profile):
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
        if p.conditions.admits(purchase, zone, profile)
        and p.conditions.eligible_amount(purchase) > 0
    ]  # fmt: skip
    multiplied = [
        _Factor(p.id, p.code, p.version, p.name, "multiplier", p.multiplier)
        for p in applicable if p.multiplier is not None and p.multiplier > 1
    ]  # fmt: skip
    tier = profile.tier
    if tier is not None and tier.multiplier > 1:
        multiplied.append(
            _Factor(None, f"tier:{tier.code}", None, tier.name, "tier", tier.multiplier)
        )
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


def find_action_rule(
    rules: Sequence[ActionRule], action: Action, custom_action: str | None
) -> ActionRule | None:
    """The rule in force for an action: the highest priority one if several match."""
    matching = [r for r in rules if r.action is action and r.custom_action == custom_action]
    return min(matching, key=lambda r: (-r.priority, r.id), default=None)


def action_breakdown(rule: ActionRule, points: int, side: str = "") -> Breakdown:
    if points <= 0:
        return Breakdown(0, ())
    detail = f"{rule.claim}{' ' + side if side else ''}: {points} points"
    return Breakdown(
        points,
        (Contribution(rule.id, rule.code, rule.version, rule.name, "action", points, detail),),
    )


def period_key(frequency: Frequency, at: datetime, zone: ZoneInfo, reference: str | None) -> str:
    """Which claim an action at `at` takes: at most one reward per key."""
    local = at.astimezone(zone)
    match frequency:
        case Frequency.ONCE:
            return "once"
        case Frequency.DAY:
            return f"day:{local.date().isoformat()}"
        case Frequency.WEEK:
            year, week, _ = local.isocalendar()
            return f"week:{year}-W{week:02d}"
        case Frequency.MONTH:
            return f"month:{local.year}-{local.month:02d}"
        case Frequency.YEAR:
            return f"year:{local.year}"
        case Frequency.PER_REFERENCE:
            assert reference is not None, "checked by the caller"
            return f"ref:{reference}"
        case Frequency.EVERY_TIME:
            raise ValueError("every-time actions take no claim")


@dataclass(frozen=True, slots=True)
class _Factor:
    """A multiplier: a promotion's, or the member's tier's."""

    rule_id: int | None
    code: str
    version: int | None
    name: str
    kind: str
    factor: Decimal


def _multiply(base: int, factors: Sequence[_Factor], stacking: Stacking) -> list[Contribution]:
    """Extra points from multipliers on `base`, rounded down, one line per factor applied."""

    def line(f: _Factor, points: int, detail: str) -> Contribution:
        return Contribution(f.rule_id, f.code, f.version, f.name, f.kind, points, detail)

    if stacking is Stacking.BEST_OF:
        best = max(factors, key=lambda f: f.factor)  # first max: highest priority
        points = int((base * (best.factor - 1)).to_integral_value(ROUND_FLOOR))
        return [line(best, points, f"×{best.factor} on {base} (best of {len(factors)})")]
    if stacking is Stacking.ADDITIVE:
        return [
            line(f, int((base * (f.factor - 1)).to_integral_value(ROUND_FLOOR)),
                 f"+{f.factor - 1}× on {base}")
            for f in factors
        ]  # fmt: skip
    # Multiplicative: each factor applies on top of the previous ones; each line is the
    # increase it brings, so the lines still sum to the total.
    lines = []
    running = Decimal(base)
    for f in factors:
        after = running * f.factor
        increase = int(after.to_integral_value(ROUND_FLOOR)) - int(
            running.to_integral_value(ROUND_FLOOR)
        )
        lines.append(line(f, increase, f"×{f.factor} on {running.normalize()}"))
        running = after
    return lines
