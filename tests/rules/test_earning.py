"""Rules in the database: versions, purchases earned by them, idempotency, explanation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.db.engine import Database
from alliance.errors import AlreadyExists, IdempotencyKeyReused, InvalidInput, NotFound
from alliance.rules.earning import breakdown_from_json, preview_earn, record_purchase
from alliance.rules.engine import OrderLine, Purchase, Stacking
from alliance.rules.models import RuleKind
from alliance.rules.service import create_rule, revise_rule, set_promotion_stacking
from alliance.rules.terms import ConditionsInput, TermsInput
from tests.factories import (
    backdated_rule,
    make_membership,
    make_merchant,
    make_program,
    merchant_actor,
)
from tests.graphql.helpers import gid, ok


def soon(seconds: int = 10) -> datetime:
    """Rule versions take effect at least 5 s ahead; purchases may be 5 min ahead (skew)."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


def purchase(amount: str, at: datetime | None = None, **fields: Any) -> Purchase:
    return Purchase(Decimal(amount), at or soon(), **fields)


async def _program_with_rules(db: Database) -> Any:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await create_rule(
        db, actor, program_id=program.id, code="base", kind=RuleKind.PURCHASE,
        name="1 point per CNY", terms=TermsInput(points_per_unit=Decimal(1)),
    )  # fmt: skip
    await create_rule(
        db, actor, program_id=program.id, code="double-weekend", kind=RuleKind.PROMOTION,
        name="Double points", terms=TermsInput(multiplier=Decimal(2)),
    )  # fmt: skip
    return program, actor


class TestRuleVersions:
    async def test_history_is_never_rewritten(self, db: Database) -> None:
        program = await make_program(db)
        actor = merchant_actor(program.merchant_id)
        with pytest.raises(InvalidInput) as past:
            await create_rule(db, actor, program_id=program.id, code="base",
                              kind=RuleKind.PURCHASE, name="b",
                              terms=TermsInput(points_per_unit=Decimal(1)),
                              valid_from=datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
        assert past.value.field == ("validFrom",)

    async def test_versions_apply_by_purchase_time(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = merchant_actor(program.merchant_id)
        v1 = await create_rule(db, actor, program_id=program.id, code="base",
                               kind=RuleKind.PURCHASE, name="b", valid_from=soon(10),
                               terms=TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
        v2 = await revise_rule(db, actor, rule_id=v1.id, valid_from=soon(60),
                               terms=TermsInput(points_per_unit=Decimal(3)))  # fmt: skip
        v3 = await revise_rule(db, actor, rule_id=v2.id, valid_from=soon(120), disable=True)
        assert (v1.version, v2.version, v3.version) == (1, 2, 3)

        async def points(at: datetime) -> int:
            breakdown = await preview_earn(db, actor, membership_id=membership.id,
                                           purchase=purchase("10", at), currency="CNY")  # fmt: skip
            return breakdown.points

        assert await points(soon(5)) == 0  # before v1
        assert await points(soon(30)) == 10  # v1
        assert await points(soon(90)) == 30  # v2
        assert await points(soon(150)) == 0  # v3: disabled

    async def test_code_unique_per_program(self, db: Database) -> None:
        program, actor = await _program_with_rules(db)
        with pytest.raises(AlreadyExists):
            await create_rule(db, actor, program_id=program.id, code="base",
                              kind=RuleKind.PURCHASE, name="again",
                              terms=TermsInput(points_per_unit=Decimal(2)))  # fmt: skip

    @pytest.mark.parametrize(
        ("kind", "terms", "field"),
        [
            (RuleKind.PURCHASE, TermsInput(), "pointsPerUnit"),
            (RuleKind.PURCHASE, TermsInput(points_per_unit=Decimal(-1)), "pointsPerUnit"),
            (RuleKind.PURCHASE, TermsInput(points_per_unit=Decimal("0.00001")), "pointsPerUnit"),
            (RuleKind.PURCHASE, TermsInput(points_per_unit=Decimal(1), multiplier=Decimal(2)),
             "multiplier"),
            (RuleKind.PROMOTION, TermsInput(), "multiplier"),
            (RuleKind.PROMOTION, TermsInput(multiplier=Decimal("0.5")), "multiplier"),
            (RuleKind.PROMOTION, TermsInput(bonus_points=-5), "bonusPoints"),
            (RuleKind.PROMOTION, TermsInput(bonus_points=5, conditions=ConditionsInput(
                weekdays=[0])), "weekdays"),
            (RuleKind.PROMOTION, TermsInput(bonus_points=5, conditions=ConditionsInput(
                categories=["wine"], excluded_categories=["wine"])), "excludedCategories"),
            (RuleKind.PROMOTION, TermsInput(bonus_points=5, conditions=ConditionsInput(
                minimum_amount=Decimal(-1))), "minimumAmount"),
        ],
    )  # fmt: skip
    async def test_invalid_terms_are_refused(
        self, db: Database, kind: RuleKind, terms: TermsInput, field: str
    ) -> None:
        program = await make_program(db)
        with pytest.raises(InvalidInput) as refused:
            await create_rule(db, merchant_actor(program.merchant_id), program_id=program.id,
                              code="r", kind=kind, name="r", terms=terms)  # fmt: skip
        assert refused.value.field == (field,)

    async def test_other_merchants_cannot_touch_rules(self, db: Database) -> None:
        program, _ = await _program_with_rules(db)
        stranger = merchant_actor(await make_merchant(db))
        with pytest.raises(NotFound):
            await create_rule(db, stranger, program_id=program.id, code="x",
                              kind=RuleKind.PURCHASE, name="x",
                              terms=TermsInput(points_per_unit=Decimal(9)))  # fmt: skip
        with pytest.raises(NotFound):
            await set_promotion_stacking(db, stranger, program_id=program.id,
                                         stacking=Stacking.ADDITIVE)  # fmt: skip


class TestRecordPurchase:
    async def test_earns_and_explains(self, db: Database) -> None:
        program, actor = await _program_with_rules(db)
        membership = await make_membership(db, program)
        result = await record_purchase(db, actor, membership_id=membership.id, order_id="A-1",
                                       purchase=purchase("88.50"), currency="CNY")  # fmt: skip
        assert result.movement is not None
        assert result.movement.points == result.breakdown.points == 88 + 88
        assert [line.code for line in result.breakdown.contributions] == [
            "base", "double-weekend"]  # fmt: skip
        # No cap cut it: the answer is the breakdown as evaluated, which is what is stored.
        (stored,) = await db.fetch_one(
            "SELECT details -> 'breakdown' FROM ledger_transaction WHERE id = %(id)s",
            {"id": result.movement.transaction_id},
        ) or (None,)
        assert breakdown_from_json(stored) == result.breakdown

    async def test_same_order_earns_once_with_its_first_breakdown(self, db: Database) -> None:
        program, actor = await _program_with_rules(db)
        membership = await make_membership(db, program)
        at = soon()
        first = await record_purchase(db, actor, membership_id=membership.id, order_id="A-2",
                                      purchase=purchase("50", at), currency="CNY")  # fmt: skip
        rules = await preview_earn(db, actor, membership_id=membership.id,
                                   purchase=purchase("50", at), currency="CNY")  # fmt: skip
        assert rules.points == 100
        again = await record_purchase(db, actor, membership_id=membership.id, order_id="A-2",
                                      purchase=purchase("50", at), currency="CNY")  # fmt: skip
        assert again.movement is not None
        assert first.movement is not None
        assert again.movement.replayed
        assert again.movement.transaction_id == first.movement.transaction_id
        assert again.breakdown == first.breakdown
        with pytest.raises(IdempotencyKeyReused):
            await record_purchase(db, actor, membership_id=membership.id, order_id="A-2",
                                  purchase=purchase("51", at), currency="CNY")  # fmt: skip

    async def test_nothing_to_earn_posts_nothing(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        result = await record_purchase(
            db, merchant_actor(program.merchant_id), membership_id=membership.id,
            order_id="A-3", purchase=purchase("10"), currency="CNY",
        )  # fmt: skip
        assert (result.movement, result.breakdown.points) == (None, 0)

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"currency": "USD"}, "currency"),
            ({"amount": "-1"}, "amount"),
            ({"amount": "1.001"}, "amount"),
            ({"at": "future"}, "occurredAt"),
            ({"at": "old"}, "occurredAt"),
            ({"lines": (OrderLine("x", Decimal(5)),)}, "lines"),
        ],
    )
    async def test_invalid_purchase(self, db: Database, change: dict[str, Any], field: str) -> None:
        program, actor = await _program_with_rules(db)
        membership = await make_membership(db, program)
        at = {"future": soon(3600), "old": soon(-40 * 86400)}.get(change.get("at", ""), soon())
        bought = Purchase(Decimal(change.get("amount", "10")), at,
                          lines=change.get("lines", ()))  # fmt: skip
        with pytest.raises(InvalidInput) as refused:
            await record_purchase(
                db, actor, membership_id=membership.id, order_id="bad", purchase=bought,
                currency=change.get("currency", "CNY"),
            )  # fmt: skip
        assert refused.value.field == (field,)

    async def test_foreign_membership_is_not_found(self, db: Database) -> None:
        program, _ = await _program_with_rules(db)
        membership = await make_membership(db, program)
        stranger = merchant_actor(await make_merchant(db))
        with pytest.raises(NotFound):
            await record_purchase(db, stranger, membership_id=membership.id, order_id="x",
                                  purchase=purchase("10"), currency="CNY")  # fmt: skip


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2),
    stacking=st.sampled_from(list(Stacking)),
)
async def test_preview_equals_the_earn(db: Database, amount: Decimal, stacking: Stacking) -> None:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    await set_promotion_stacking(db, actor, program_id=program.id, stacking=stacking)
    for code, terms in (
        ("base", TermsInput(points_per_unit=Decimal("1.5"))),
        ("big", TermsInput(multiplier=Decimal("1.25"), conditions=ConditionsInput(
            minimum_amount=Decimal(100)))),
        ("launch", TermsInput(multiplier=Decimal(2), bonus_points=8)),
    ):  # fmt: skip
        kind = RuleKind.PURCHASE if code == "base" else RuleKind.PROMOTION
        await create_rule(db, actor, program_id=program.id, code=code, kind=kind, name=code,
                          terms=terms)  # fmt: skip
    membership = await make_membership(db, program)
    bought = purchase(str(amount))
    preview = await preview_earn(db, actor, membership_id=membership.id, purchase=bought,
                                 currency="CNY")  # fmt: skip
    actual = await record_purchase(db, actor, membership_id=membership.id, order_id="P",
                                   purchase=bought, currency="CNY")  # fmt: skip
    assert actual.breakdown == preview
    assert (actual.movement.points if actual.movement else 0) == preview.points


class TestGraphQL:
    async def test_member_sees_why(self, db: Database) -> None:
        program, actor = await _program_with_rules(db)
        membership = await make_membership(db, program)
        data = await ok(db, actor, """mutation($input: RecordPurchaseInput!) {
            recordPurchase(input: $input) { entry { id points } replayed
              breakdown { points lines { code version kind points rule { name } } }
              userErrors { code field } } }""", {"input": {
            "membershipId": gid("Membership", membership.id), "orderId": "G-1",
            "amount": "12.80", "occurredAt": soon().isoformat(),
            "lines": [{"sku": "noodles", "amount": "12.80", "category": "food"}]}})  # fmt: skip
        payload = data["recordPurchase"]
        assert payload["userErrors"] == []
        assert payload["breakdown"]["points"] == payload["entry"]["points"] == 24
        from tests.factories import member_actor

        member = member_actor(membership, program.merchant_id)
        history = await ok(
            db,
            member,
            """{ viewer { membership { transactions {
            edges { node { kind points breakdown { lines { code points } } } } } } } }""",
        )
        node = history["viewer"]["membership"]["transactions"]["edges"][0]["node"]
        assert node["kind"] == "EARN"
        assert node["breakdown"]["lines"] == [{"code": "base", "points": 12},
                                              {"code": "double-weekend", "points": 12}]  # fmt: skip

    async def test_rules_listed_on_the_program(self, db: Database) -> None:
        program, actor = await _program_with_rules(db)
        data = await ok(
            db,
            actor,
            """query($id: ID!) { node(id: $id) { ... on Program {
            promotionStacking earningRules { edges { node { code version kind
              terms { pointsPerUnit multiplier } } } } } } }""",
            {"id": gid("Program", program.id)},
        )
        rules = [edge["node"] for edge in data["node"]["earningRules"]["edges"]]
        assert data["node"]["promotionStacking"] == "BEST_OF"
        assert [(r["code"], r["kind"]) for r in rules] == [
            ("base", "PURCHASE"), ("double-weekend", "PROMOTION")]  # fmt: skip

    async def test_create_rule_user_errors(self, db: Database) -> None:
        program = await make_program(db)
        data = await ok(db, merchant_actor(program.merchant_id), """mutation($p: ID!) {
            createEarningRule(input: {programId: $p, code: "base", kind: PURCHASE, name: "b",
              terms: {pointsPerUnit: "-2"}}) { rule { id } userErrors { code field } } }""",
                        {"p": gid("Program", program.id)})  # fmt: skip
        assert data["createEarningRule"]["userErrors"] == [
            {"code": "INVALID_INPUT", "field": ["input", "pointsPerUnit"]}]  # fmt: skip


async def test_concurrent_earns_read_the_rules_once(db: Database) -> None:
    import asyncio

    from alliance.rules.service import forget_cached

    program, actor = await _program_with_rules(db)
    memberships = [await make_membership(db, program) for _ in range(3)]
    forget_cached()
    at = soon()
    with db.count_statements() as counter:
        results = await asyncio.gather(*(
            preview_earn(db, actor, membership_id=m.id, purchase=purchase("10", at),
                         currency="CNY")
            for m in memberships * 5
        ))  # fmt: skip
    assert {result.points for result in results} == {20}
    # The program, its rule versions and its tier ladder are read once for all 15 earns.
    ladder = [sql for sql in counter.statements if "tier_ladder" in sql]
    assert len(ladder) == 1
    assert sum("FROM earning_rule" in sql for sql in counter.statements) == 1
    assert sum("FROM program" in sql for sql in counter.statements if sql not in ladder) == 1


async def test_revision_keeps_the_end_date(db: Database) -> None:
    program = await make_program(db)
    actor = merchant_actor(program.merchant_id)
    campaign = await create_rule(
        db, actor, program_id=program.id, code="launch", kind=RuleKind.PROMOTION, name="l",
        terms=TermsInput(bonus_points=10), valid_until=soon(3600),
    )  # fmt: skip
    revised = await revise_rule(db, actor, rule_id=campaign.id,
                                terms=TermsInput(bonus_points=20))  # fmt: skip
    assert revised.valid_until == campaign.valid_until
    with pytest.raises(InvalidInput) as late:
        await revise_rule(db, actor, rule_id=campaign.id, valid_from=soon(7200))
    assert late.value.field == ("validUntil",)


async def test_a_new_program_of_the_merchant_is_earned_in_at_once(db: Database) -> None:
    """Earns guess the program of a merchant that has one; a guess the database refutes
    (a second program this process has not seen yet) is retried with the exact one."""
    import time

    from alliance.rules import service

    merchant = await make_merchant(db)
    first, second = await make_program(db, merchant), await make_program(db, merchant)
    actor = merchant_actor(merchant.id)
    for program, rate in ((first, 1), (second, 3)):
        await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                             TermsInput(points_per_unit=Decimal(rate)))  # fmt: skip
    late = await make_membership(db, second)
    # This process read the merchant's programs before the second one existed.
    service._merchant_programs[merchant.id] = ((first.id,), time.monotonic())
    with db.count_statements() as counter:
        result = await record_purchase(db, actor, membership_id=late.id, order_id="3",
                                       purchase=purchase("10", datetime.now(UTC)),
                                       currency="CNY")  # fmt: skip
    assert result.movement is not None
    assert (result.breakdown.points, result.movement.program_id) == (30, second.id)
    assert sum("ledger_earn" in sql for sql in counter.statements) == 2  # refuted, then right
