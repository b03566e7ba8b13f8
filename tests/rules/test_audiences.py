"""Promotion audiences: a promotion for some members only, by segment (and tier)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import InvalidInput, NotFound
from alliance.members.service import set_member_segments
from alliance.rules.earning import preview_earn, record_purchase
from alliance.rules.engine import Purchase
from alliance.rules.models import RuleKind
from alliance.rules.service import create_rule
from alliance.rules.terms import ConditionsInput, TermsInput
from tests.factories import backdated_rule, make_membership, make_program, merchant_actor
from tests.graphql.helpers import gid, ok


async def test_a_segment_promotion_reaches_only_its_segment(db: Database) -> None:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    await backdated_rule(db, program, "students", RuleKind.PROMOTION, TermsInput(
        bonus_points=30, conditions=ConditionsInput(segments=["students"])))  # fmt: skip
    student, other = await make_membership(db, program), await make_membership(db, program)
    data = await ok(db, actor, """mutation($m: ID!) {
        setMemberSegments(input: {membershipId: $m, segments: ["students", "students"]}) {
          membership { segments } userErrors { code field } } }""",
        {"m": gid("Membership", student.id)})  # fmt: skip
    assert data["setMemberSegments"] == {"membership": {"segments": ["students"]}, "userErrors": []}

    at = datetime.now(UTC)
    earned = {}
    for membership in (student, other):
        result = await record_purchase(
            db, actor, membership_id=membership.id, order_id=f"o{membership.id}",
            purchase=Purchase(Decimal(100), at), currency="CNY",
        )  # fmt: skip
        earned[membership.id] = result.breakdown.points
    assert earned == {student.id: 130, other.id: 100}
    preview = await preview_earn(db, actor, membership_id=student.id,
                                 purchase=Purchase(Decimal(10), at), currency="CNY")  # fmt: skip
    assert preview.points == 40


async def test_segments_are_the_merchants_own(db: Database) -> None:
    program = await make_program(db)
    membership = await make_membership(db, program)
    stranger = merchant_actor((await make_program(db)).merchant_id)
    with pytest.raises(NotFound):
        await set_member_segments(db, stranger, membership_id=membership.id, segments=["x"])
    with pytest.raises(InvalidInput):
        await set_member_segments(db, merchant_actor(program.merchant_id),
                                  membership_id=membership.id,
                                  segments=[f"s{n}" for n in range(21)])  # fmt: skip


async def test_an_empty_audience_is_refused(db: Database) -> None:
    program = await make_program(db)
    with pytest.raises(InvalidInput) as refused:
        await create_rule(db, merchant_actor(program.merchant_id), program_id=program.id,
                          code="p", kind=RuleKind.PROMOTION, name="p",
                          terms=TermsInput(bonus_points=5,
                                           conditions=ConditionsInput(segments=[])))  # fmt: skip
    assert refused.value.field == ("segments",)
