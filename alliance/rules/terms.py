"""The terms of a rule: validated from input, stored as JSON, loaded into engine objects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from alliance.errors import InvalidInput
from alliance.rules.engine import (
    FIXED_FREQUENCY,
    Action,
    ActionRule,
    Cap,
    CapPeriod,
    Conditions,
    Frequency,
    Promotion,
    PurchaseRule,
    Rounding,
)
from alliance.rules.models import RuleKind
from alliance.validation import check_decimal, check_range, clean_code, clean_text

MAX_LIST = 100


@dataclass(frozen=True, slots=True)
class ConditionsInput:
    minimum_amount: Decimal = Decimal(0)
    channels: Iterable[str] | None = None
    categories: Iterable[str] | None = None
    excluded_categories: Iterable[str] = ()
    weekdays: Iterable[int] | None = None
    tiers: Iterable[str] | None = None
    segments: Iterable[str] | None = None


@dataclass(frozen=True, slots=True)
class TermsInput:
    """What a rule version says; which fields matter depends on the rule's kind."""

    points_per_unit: Decimal | None = None
    rounding: Rounding = Rounding.FLOOR
    multiplier: Decimal | None = None
    bonus_points: int = 0
    conditions: ConditionsInput = ConditionsInput()
    caps: Iterable[Cap] = ()
    """Per member per period, on this rule's points (any kind)."""
    action: Action | None = None
    """Action rules: which action, its points, and how often it is rewarded."""
    custom_action: str | None = None
    points: int = 0
    referee_points: int = 0
    frequency: Frequency | None = None


def _names(values: Iterable[str] | None, field: str) -> list[str] | None:
    if values is None:
        return None
    names = sorted({clean_text(value, field, max_length=64) for value in values})
    if len(names) > MAX_LIST:
        raise InvalidInput(f"{field} lists at most {MAX_LIST} names", field=(field,))
    return names


def conditions_json(conditions: ConditionsInput) -> dict[str, Any]:
    check_decimal(conditions.minimum_amount, "minimumAmount", minimum=Decimal(0),
                  maximum=Decimal(10**9), places=2)  # fmt: skip
    weekdays = None
    if conditions.weekdays is not None:
        weekdays = sorted(set(conditions.weekdays))
        if not weekdays or any(not 1 <= day <= 7 for day in weekdays):
            raise InvalidInput("weekdays are ISO days 1 (Monday) to 7 (Sunday)",
                               field=("weekdays",))  # fmt: skip
    categories = _names(conditions.categories, "categories")
    excluded = _names(conditions.excluded_categories, "excludedCategories") or []
    if categories is not None and set(categories) & set(excluded):
        raise InvalidInput("a category cannot be both included and excluded",
                           field=("excludedCategories",))  # fmt: skip
    tiers = _names(conditions.tiers, "tiers")
    segments = _names(conditions.segments, "segments")
    for audience, field in ((tiers, "tiers"), (segments, "segments")):
        if audience is not None and not audience:
            raise InvalidInput(f"an empty {field} audience admits nobody", field=(field,))
    return {
        "minimum_amount": str(conditions.minimum_amount),
        "channels": _names(conditions.channels, "channels"),
        "categories": categories,
        "excluded_categories": excluded,
        "weekdays": weekdays,
        "tiers": tiers,
        "segments": segments,
    }


def caps_json(caps: Iterable[Cap], field: str = "caps") -> list[dict[str, Any]]:
    """Valid caps, one per period at most, in day-month-year order."""
    by_period: dict[CapPeriod, Cap] = {}
    for cap in caps:
        check_range(cap.points, "points", minimum=1, maximum=10**12)
        if cap.period in by_period:
            raise InvalidInput(f"one {cap.period.value} cap at most", field=(field,))
        by_period[cap.period] = cap
    return [by_period[period].as_json() for period in CapPeriod if period in by_period]


def load_caps(stored: list[dict[str, Any]] | None) -> tuple[Cap, ...]:
    return tuple(Cap(CapPeriod(cap["period"]), int(cap["points"])) for cap in stored or ())


def _action_terms(terms: TermsInput) -> dict[str, Any]:
    if terms.action is None:
        raise InvalidInput("an action rule needs the action", field=("action",))
    if terms.points_per_unit is not None or terms.multiplier is not None or terms.bonus_points:
        raise InvalidInput("an action rule gives fixed points", field=("points",))
    custom = None
    if terms.action is Action.CUSTOM:
        if terms.custom_action is None:
            raise InvalidInput("a custom action needs its name", field=("customAction",))
        custom = clean_code(terms.custom_action, "customAction")
    elif terms.custom_action is not None:
        raise InvalidInput("customAction names CUSTOM actions only", field=("customAction",))
    check_range(terms.points, "points", minimum=0, maximum=1_000_000)
    check_range(terms.referee_points, "refereePoints", minimum=0, maximum=1_000_000)
    if terms.referee_points and terms.action is not Action.REFERRAL:
        raise InvalidInput("refereePoints belong to referrals", field=("refereePoints",))
    if terms.points == 0 and terms.referee_points == 0:
        raise InvalidInput("an action rule must give points", field=("points",))
    fixed = FIXED_FREQUENCY.get(terms.action)
    if fixed is not None and terms.frequency not in (None, fixed):
        raise InvalidInput(
            f"{terms.action.value} is rewarded {fixed.value.replace('_', ' ')}",
            field=("frequency",),
        )
    return {
        "action": terms.action.value,
        "custom_action": custom,
        "points": terms.points,
        "referee_points": terms.referee_points,
        "frequency": (fixed or terms.frequency or Frequency.EVERY_TIME).value,
        "caps": caps_json(terms.caps),
    }


def terms_json(kind: RuleKind, terms: TermsInput) -> dict[str, Any]:
    """The stored form of valid terms; InvalidInput names the field at fault."""
    if kind is RuleKind.ACTION:
        return _action_terms(terms)
    if terms.action is not None or terms.points or terms.referee_points:
        raise InvalidInput("action, points and refereePoints belong to action rules",
                           field=("action",))  # fmt: skip
    conditions = conditions_json(terms.conditions)
    caps = caps_json(terms.caps)
    if kind is RuleKind.PURCHASE:
        if terms.points_per_unit is None:
            raise InvalidInput("a purchase rule needs pointsPerUnit", field=("pointsPerUnit",))
        check_decimal(terms.points_per_unit, "pointsPerUnit", minimum_exclusive=Decimal(0),
                      maximum=Decimal(1000), places=4)  # fmt: skip
        if terms.multiplier is not None or terms.bonus_points:
            raise InvalidInput("multiplier and bonusPoints belong to promotions",
                               field=("multiplier",))  # fmt: skip
        return {"points_per_unit": str(terms.points_per_unit), "rounding": terms.rounding.value,
                "conditions": conditions, "caps": caps}  # fmt: skip
    if terms.points_per_unit is not None:
        raise InvalidInput("pointsPerUnit belongs to purchase rules", field=("pointsPerUnit",))
    if terms.multiplier is not None:
        check_decimal(terms.multiplier, "multiplier", minimum_exclusive=Decimal(1),
                      maximum=Decimal(20), places=2)  # fmt: skip
    check_range(terms.bonus_points, "bonusPoints", minimum=0, maximum=1_000_000)
    if terms.multiplier is None and terms.bonus_points == 0:
        raise InvalidInput("a promotion needs a multiplier above 1 or bonus points",
                           field=("multiplier",))  # fmt: skip
    return {
        "multiplier": None if terms.multiplier is None else str(terms.multiplier),
        "bonus_points": terms.bonus_points,
        "conditions": conditions,
        "caps": caps,
    }


def load_conditions(stored: dict[str, Any]) -> Conditions:
    def names(key: str) -> frozenset[str] | None:
        value = stored.get(key)
        return None if value is None else frozenset(value)

    weekdays = stored.get("weekdays")
    return Conditions(
        minimum_amount=Decimal(stored["minimum_amount"]),
        channels=names("channels"),
        categories=names("categories"),
        excluded_categories=frozenset(stored.get("excluded_categories") or ()),
        weekdays=None if weekdays is None else frozenset(weekdays),
        tiers=names("tiers"),
        segments=names("segments"),
    )


def load_purchase_rule(
    rule_id: int, code: str, version: int, name: str, priority: int, params: dict[str, Any]
) -> PurchaseRule:
    return PurchaseRule(
        rule_id, code, version, name, Decimal(params["points_per_unit"]),
        Rounding(params["rounding"]), load_conditions(params["conditions"]), priority,
        load_caps(params.get("caps")),
    )  # fmt: skip


def load_promotion(
    rule_id: int, code: str, version: int, name: str, priority: int, params: dict[str, Any]
) -> Promotion:
    multiplier = params.get("multiplier")
    return Promotion(
        rule_id, code, version, name, None if multiplier is None else Decimal(multiplier),
        int(params.get("bonus_points") or 0), load_conditions(params["conditions"]), priority,
        load_caps(params.get("caps")),
    )  # fmt: skip


def load_action_rule(
    rule_id: int, code: str, version: int, name: str, priority: int, params: dict[str, Any]
) -> ActionRule:
    return ActionRule(
        rule_id, code, version, name, Action(params["action"]), params.get("custom_action"),
        int(params["points"]), int(params.get("referee_points") or 0),
        Frequency(params["frequency"]), priority, load_caps(params.get("caps")),
    )  # fmt: skip
