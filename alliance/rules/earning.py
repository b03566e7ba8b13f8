"""Earning by the rules: purchases and actions, previewed or posted.

Python evaluates the rule versions in force (cached per process, see service.py);
the ledger function then cuts the result to the caps under the member account's lock
and posts it, so caps and once-only actions hold under any concurrency. A preview
runs the same evaluation and the same cap arithmetic without counting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import InvalidInput, NotFound
from alliance.ledger.service import (
    Earn,
    Movement,
    ProgramMismatch,
    request_fingerprint,
    run_earn,
    run_referral,
)
from alliance.rules.engine import (
    NO_PROFILE,
    Action,
    ActionRule,
    Breakdown,
    Contribution,
    Frequency,
    MemberProfile,
    Purchase,
    TierFactor,
    action_breakdown,
    evaluate,
    find_action_rule,
    period_key,
)
from alliance.rules.service import (
    ProgramRules,
    likely_program,
    program_of_membership,
    program_rules,
    remember_program,
)
from alliance.tiers.ladder import Ladder
from alliance.tiers.service import tier_ladder
from alliance.validation import check_decimal, check_idempotency_key, clean_code, clean_text

MAX_LATE = timedelta(days=30)
"""How old a purchase or action may be when it is recorded."""
MAX_LINES = 200
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class EarnResult:
    breakdown: Breakdown
    """What was posted and why, cap cuts included."""
    movement: Movement | None
    """None when nothing is posted (the purchase earns nothing, or caps left nothing)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    earned: EarnResult
    """For the member who did the action (for a referral: the referee)."""
    referrer: EarnResult | None = None


def check_occurred_at(occurred_at: datetime) -> None:
    if occurred_at.tzinfo is None:
        raise InvalidInput("occurredAt needs a time zone", field=("occurredAt",))
    now = datetime.now(UTC)
    if occurred_at > now + CLOCK_SKEW:
        raise InvalidInput("occurredAt is in the future", field=("occurredAt",))
    if occurred_at < now - MAX_LATE:
        raise InvalidInput(
            f"events older than {MAX_LATE.days} days cannot be recorded", field=("occurredAt",)
        )


def check_purchase(purchase: Purchase, currency: str, program_currency: str) -> None:
    if currency != program_currency:
        raise InvalidInput(f"the program earns on {program_currency} amounts", field=("currency",))
    check_decimal(purchase.amount, "amount", minimum_exclusive=Decimal(0),
                  maximum=Decimal(10**9), places=2)  # fmt: skip
    check_occurred_at(purchase.occurred_at)
    if len(purchase.lines) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} order lines", field=("lines",))
    for line in purchase.lines:
        clean_text(line.sku, "sku", max_length=64)
        check_decimal(line.amount, "amount", minimum=Decimal(0), maximum=Decimal(10**9),
                      places=2)  # fmt: skip
        if line.category is not None:
            clean_text(line.category, "category", max_length=64)
    if purchase.lines and purchase.lines_total != purchase.amount:
        raise InvalidInput("the order lines must add up to the amount", field=("lines",))


async def _merchant_rules(
    db: Database, actor: Actor, membership_id: int, program_id: int | None = None
) -> ProgramRules:
    actor.require(Role.MERCHANT)
    if program_id is None:
        program_id = await program_of_membership(db, membership_id)
    rules = await program_rules(db, program_id)
    if rules.merchant_id != actor.merchant_id:
        raise NotFound("membership not found", field=("membershipId",))
    return rules


async def _purchase_breakdown(
    db: Database,
    actor: Actor,
    membership_id: int,
    purchase: Purchase,
    currency: str,
    program_id: int | None = None,
) -> tuple[ProgramRules, Breakdown]:
    rules = await _merchant_rules(db, actor, membership_id, program_id)
    check_purchase(purchase, currency, db.settings.currency)
    found = rules.in_force(purchase.occurred_at)
    ladder = await tier_ladder(db, rules.program_id)
    profile = NO_PROFILE
    if rules.needs_profile or (ladder is not None and ladder.multiplies):
        profile = await member_profile(db, membership_id, ladder)
    breakdown = evaluate(purchase, found.purchase, found.promotions, stacking=rules.stacking,
                         zone=db.settings.zone, profile=profile)  # fmt: skip
    return rules, breakdown


_PROFILE_SQL = """
    SELECT m.segments, given.code, given.rank
      FROM membership m
      LEFT JOIN membership_tier mt ON mt.membership_id = m.id
      LEFT JOIN tier given ON given.id = mt.tier_id
     WHERE m.id = %(id)s"""


async def member_profile(db: Database, membership_id: int, ladder: Ladder | None) -> MemberProfile:
    """The member's segments and tier now: one read, only for programs that need them."""
    row = await db.fetch_one(_PROFILE_SQL, {"id": membership_id})
    if row is None:
        raise NotFound("membership not found", field=("membershipId",))
    segments, code, rank = row
    tier = None
    if ladder is not None:
        held = ladder.held(code, rank or 0)
        tier = TierFactor(held.code, held.name, held.multiplier)
    return MemberProfile(tier=tier, segments=frozenset(segments))


async def _capped_preview(
    db: Database, rules: ProgramRules, membership_id: int, breakdown: Breakdown, at: datetime
) -> Breakdown:
    if breakdown.points == 0:
        return breakdown
    row = await db.fetch_one(
        "SELECT earn_preview(%(membership)s::bigint, %(breakdown)s, %(at)s, %(tz)s)",
        {"membership": membership_id, "breakdown": Jsonb(rules.lines_json(breakdown)), "at": at,
         "tz": db.settings.time_zone},
    )  # fmt: skip
    if row is None or row[0] is None:
        raise NotFound("membership not found", field=("membershipId",))
    return breakdown_from_json(row[0])


async def preview_earn(
    db: Database, actor: Actor, *, membership_id: int, purchase: Purchase, currency: str
) -> Breakdown:
    """What recording this purchase would earn now, caps as they stand; nothing is posted."""
    rules, breakdown = await _purchase_breakdown(db, actor, membership_id, purchase, currency)
    return await _capped_preview(db, rules, membership_id, breakdown, purchase.occurred_at)


async def record_purchase(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    order_id: str,
    purchase: Purchase,
    currency: str,
) -> EarnResult:
    """Earn on a purchase by the rules in force when it happened; idempotent per order.

    The merchant's order id is the idempotency key across all the merchant's apps: the
    same order recorded twice earns once, and the same order id with another purchase
    is refused. A purchase that earns nothing posts nothing.
    """
    order_id = clean_text(order_id, "orderId", max_length=64)
    actor.require(Role.MERCHANT)
    assert actor.merchant_id is not None, "merchant actors are bound to their merchant"
    program_id, certain = await likely_program(db, actor.merchant_id, membership_id)
    if not certain:
        try:
            return await _record_purchase(
                db, actor, membership_id, order_id, purchase, currency, program_id, certain
            )
        except ProgramMismatch:  # the merchant has more programs than this process knew
            program_id = await program_of_membership(db, membership_id)
    return await _record_purchase(
        db, actor, membership_id, order_id, purchase, currency, program_id, True
    )


async def _record_purchase(
    db: Database,
    actor: Actor,
    membership_id: int,
    order_id: str,
    purchase: Purchase,
    currency: str,
    program_id: int,
    certain: bool,
) -> EarnResult:
    rules, breakdown = await _purchase_breakdown(
        db, actor, membership_id, purchase, currency, program_id
    )
    if breakdown.points == 0:
        if not certain and await program_of_membership(db, membership_id) != program_id:
            raise ProgramMismatch
        return EarnResult(breakdown, None)
    fingerprint = request_fingerprint(
        "purchase", membership=membership_id, amount=str(purchase.amount), currency=currency,
        channel=purchase.channel, occurred_at=purchase.occurred_at.isoformat(),
        lines=[[line.sku, line.category, str(line.amount)] for line in purchase.lines],
    )  # fmt: skip
    details = {"order_id": order_id, "amount": str(purchase.amount), "currency": currency,
               "occurred_at": purchase.occurred_at.isoformat()}  # fmt: skip
    earn = await run_earn(
        db, actor, membership_id, f"purchase {order_id}", scope=f"order:{actor.merchant_id}",
        key=order_id, fingerprint=fingerprint, at=purchase.occurred_at,
        breakdown=rules.lines_json(breakdown), details=details, spend=purchase.amount,
        program_id=None if certain else program_id,
    )  # fmt: skip
    if earn.movement is not None:
        remember_program(membership_id, earn.movement.program_id)
    return _result(earn, breakdown)


def _result(earn: Earn, sent: Breakdown | None = None) -> EarnResult:
    """`sent`: the breakdown as evaluated, when the caller still has it (no cap cut it:
    the stored one is the same, and is not parsed back)."""
    if earn.as_sent and sent is not None:
        return EarnResult(sent, earn.movement)
    return EarnResult(breakdown_from_json(earn.breakdown), earn.movement)


async def record_action(
    db: Database,
    actor: Actor,
    *,
    membership_id: int,
    action: Action,
    idempotency_key: str,
    custom_action: str | None = None,
    reference: str | None = None,
    referrer_membership_id: int | None = None,
    occurred_at: datetime | None = None,
) -> ActionResult:
    """Reward a member for an action by the program's action rule for it.

    Once-only and per-period actions take a claim in the same transaction as the
    points, so a second claim in the period is refused by the database. A referral
    rewards both sides once per referee; self and mutual referrals are refused.
    """
    check_idempotency_key(idempotency_key)
    at = occurred_at or datetime.now(UTC)
    check_occurred_at(at)
    if custom_action is not None:
        custom_action = clean_code(custom_action, "customAction")
    if (action is Action.CUSTOM) != (custom_action is not None):
        raise InvalidInput("customAction names CUSTOM actions, and only them",
                           field=("customAction",))  # fmt: skip
    if (action is Action.REFERRAL) != (referrer_membership_id is not None):
        raise InvalidInput("a referral, and only a referral, names the referrer",
                           field=("referrerMembershipId",))  # fmt: skip
    if reference is not None:
        reference = clean_text(reference, "reference", max_length=128)
    rules = await _merchant_rules(db, actor, membership_id)
    rule = find_action_rule(rules.in_force(at).actions, action, custom_action)
    if rule is None:
        raise NotFound("no rule of this program rewards this action", field=("action",))
    fingerprint = request_fingerprint(
        "action", membership=membership_id, action=rule.claim, reference=reference,
        referrer=referrer_membership_id,
        # As sent: a retry without occurredAt is the same request a moment later.
        occurred_at=None if occurred_at is None else occurred_at.isoformat(),
    )  # fmt: skip
    details = {"action": rule.claim, "occurred_at": at.isoformat(), "reference": reference}
    reason = f"action {rule.claim}"
    if referrer_membership_id is not None:
        referee, referrer = await run_referral(
            db, actor, referee_membership_id=membership_id,
            referrer_membership_id=referrer_membership_id, reason=reason,
            scope=actor.idempotency_scope, key=idempotency_key, fingerprint=fingerprint, at=at,
            referee_breakdown=rules.lines_json(action_breakdown(rule, rule.referee_points,
                                                                "(referred)")),
            referrer_breakdown=rules.lines_json(action_breakdown(rule, rule.points,
                                                                 "(referrer)")),
            details={**details, "referrer_membership_id": referrer_membership_id},
        )  # fmt: skip
        return ActionResult(_result(referee), _result(referrer))
    claim, key = _claim(rule, at, db, reference)
    earn = await run_earn(
        db, actor, membership_id, reason, scope=actor.idempotency_scope, key=idempotency_key,
        fingerprint=fingerprint, at=at, breakdown=rules.lines_json(action_breakdown(
            rule, rule.points)), details=details, action=claim, period_key=key,
    )  # fmt: skip
    return ActionResult(_result(earn))


def _claim(
    rule: ActionRule, at: datetime, db: Database, reference: str | None
) -> tuple[str | None, str | None]:
    if rule.frequency is Frequency.EVERY_TIME:
        return None, None
    if rule.frequency is Frequency.PER_REFERENCE and reference is None:
        raise InvalidInput(f"{rule.claim} is rewarded once per reference: give it",
                           field=("reference",))  # fmt: skip
    return rule.claim, period_key(rule.frequency, at, db.settings.zone, reference)


def breakdown_from_json(stored: dict[str, Any]) -> Breakdown:
    """A stored breakdown: `details.breakdown` of an earn (or, for earns recorded before
    caps existed, the details themselves)."""
    stored = stored.get("breakdown", stored)
    lines = tuple(
        Contribution(
            line["rule_id"],
            line["code"],
            line["version"],
            line["name"],
            line["kind"],
            line["points"],
            line["detail"],
        )
        for line in stored["lines"]
    )
    return Breakdown(int(stored["points"]), lines)
