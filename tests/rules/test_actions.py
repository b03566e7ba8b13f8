"""Action earning: once-only and per-period rewards enforced by the database; referrals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alliance.db.engine import Database
from alliance.errors import AlreadyRewarded, InvalidInput, NotFound
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from alliance.rules.earning import ActionResult, record_action
from alliance.rules.engine import Action, Cap, CapPeriod, Frequency
from alliance.rules.models import RuleKind
from alliance.rules.service import create_rule
from alliance.rules.terms import TermsInput
from tests.factories import backdated_rule, make_membership, make_program, merchant_actor
from tests.graphql.helpers import gid, ok

_keys = iter(range(10**9))


async def _program(db: Database, **rules: TermsInput) -> tuple[ProgramRecord, Any]:
    program = await make_program(db)
    for code, terms in rules.items():
        await backdated_rule(db, program, code.replace("_", "-"), RuleKind.ACTION, terms)
    return program, merchant_actor(program.merchant_id)


async def _do(
    db: Database, actor: Any, membership: MembershipRecord, action: Action, **fields: Any
) -> ActionResult:
    return await record_action(db, actor, membership_id=membership.id, action=action,
                               idempotency_key=f"k{next(_keys)}", **fields)  # fmt: skip


def _points(result: ActionResult) -> int:
    return result.earned.breakdown.points


class TestFrequencies:
    async def test_sign_up_is_rewarded_once(self, db: Database) -> None:
        program, actor = await _program(db, sign_up=TermsInput(action=Action.SIGN_UP, points=100))
        member = await make_membership(db, program)
        assert _points(await _do(db, actor, member, Action.SIGN_UP)) == 100
        with pytest.raises(AlreadyRewarded):
            await _do(db, actor, member, Action.SIGN_UP)

    async def test_daily_check_in_once_per_shanghai_day(self, db: Database) -> None:
        program, actor = await _program(
            db, check_in=TermsInput(action=Action.DAILY_CHECK_IN, points=5)
        )
        member = await make_membership(db, program)
        day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)  # fmt: skip
        await _do(db, actor, member, Action.DAILY_CHECK_IN, occurred_at=day + timedelta(hours=1))
        with pytest.raises(AlreadyRewarded):  # 15:59 UTC is still the same day in Shanghai
            await _do(db, actor, member, Action.DAILY_CHECK_IN,
                      occurred_at=day + timedelta(hours=15, minutes=59))  # fmt: skip
        next_day = await _do(db, actor, member, Action.DAILY_CHECK_IN,
                             occurred_at=day + timedelta(hours=16, minutes=1))  # fmt: skip
        assert _points(next_day) == 5

    async def test_concurrent_check_ins_reward_exactly_one(self, db: Database) -> None:
        program, actor = await _program(
            db, check_in=TermsInput(action=Action.DAILY_CHECK_IN, points=5)
        )
        member = await make_membership(db, program)
        outcomes = await asyncio.gather(
            *(_do(db, actor, member, Action.DAILY_CHECK_IN) for _ in range(10)),
            return_exceptions=True,
        )
        assert sum(isinstance(o, ActionResult) for o in outcomes) == 1
        assert all(isinstance(o, ActionResult | AlreadyRewarded) for o in outcomes)

    async def test_a_survey_is_rewarded_once_per_survey(self, db: Database) -> None:
        program, actor = await _program(db, survey=TermsInput(
            action=Action.SURVEY, points=20, frequency=Frequency.PER_REFERENCE))  # fmt: skip
        member = await make_membership(db, program)
        await _do(db, actor, member, Action.SURVEY, reference="survey-1")
        await _do(db, actor, member, Action.SURVEY, reference="survey-2")
        with pytest.raises(AlreadyRewarded):
            await _do(db, actor, member, Action.SURVEY, reference="survey-1")
        with pytest.raises(InvalidInput) as missing:
            await _do(db, actor, member, Action.SURVEY)
        assert missing.value.field == ("reference",)

    async def test_custom_actions_and_rule_caps(self, db: Database) -> None:
        program, actor = await _program(db, review=TermsInput(
            action=Action.CUSTOM, custom_action="write-review", points=10,
            caps=(Cap(CapPeriod.DAY, 25),)))  # fmt: skip
        member = await make_membership(db, program)
        earned = [
            _points(await _do(db, actor, member, Action.CUSTOM, custom_action="write-review"))
            for _ in range(4)
        ]
        assert earned == [10, 10, 5, 0]
        with pytest.raises(NotFound):
            await _do(db, actor, member, Action.CUSTOM, custom_action="other")

    async def test_a_replay_returns_the_first_result(self, db: Database) -> None:
        program, actor = await _program(db, sign_up=TermsInput(action=Action.SIGN_UP, points=7))
        member = await make_membership(db, program)
        first = await record_action(db, actor, membership_id=member.id, action=Action.SIGN_UP,
                                    idempotency_key="same")  # fmt: skip
        again = await record_action(db, actor, membership_id=member.id, action=Action.SIGN_UP,
                                    idempotency_key="same")  # fmt: skip
        assert again.earned.movement is not None
        assert again.earned.movement.replayed
        assert first.earned.movement is not None
        assert again.earned.movement.transaction_id == first.earned.movement.transaction_id


class TestReferrals:
    async def _setup(self, db: Database) -> tuple[ProgramRecord, Any, list[MembershipRecord]]:
        program, actor = await _program(db, referral=TermsInput(
            action=Action.REFERRAL, points=50, referee_points=20))  # fmt: skip
        members = [await make_membership(db, program) for _ in range(3)]
        return program, actor, members

    async def test_both_sides_earn(self, db: Database) -> None:
        _, actor, (alice, bob, _) = await self._setup(db)
        result = await _do(db, actor, bob, Action.REFERRAL, referrer_membership_id=alice.id)
        assert result.referrer is not None
        assert (_points(result), result.referrer.breakdown.points) == (20, 50)

    async def test_fraud_guards(self, db: Database) -> None:
        program, actor, (alice, bob, carol) = await self._setup(db)
        with pytest.raises(InvalidInput, match="themself"):
            await _do(db, actor, alice, Action.REFERRAL, referrer_membership_id=alice.id)
        await _do(db, actor, bob, Action.REFERRAL, referrer_membership_id=alice.id)
        with pytest.raises(AlreadyRewarded, match="already referred"):
            await _do(db, actor, bob, Action.REFERRAL, referrer_membership_id=carol.id)
        with pytest.raises(AlreadyRewarded, match="mutual"):
            await _do(db, actor, alice, Action.REFERRAL, referrer_membership_id=bob.id)
        other_program = await make_program(db)
        stranger = await make_membership(db, other_program)
        with pytest.raises(NotFound):
            await _do(db, actor, carol, Action.REFERRAL, referrer_membership_id=stranger.id)
        balances = await db.fetch_all(
            "SELECT a.balance FROM account a JOIN membership m ON m.id = a.membership_id"
            " WHERE m.program_id = %(p)s ORDER BY m.id", {"p": program.id},
        )  # fmt: skip
        assert [row[0] for row in balances] == [50, 20, 0]

    async def test_a_referral_sent_again_is_a_replay(self, db: Database) -> None:
        _, actor, (alice, bob, _) = await self._setup(db)
        args: dict[str, Any] = {
            "membership_id": bob.id,
            "action": Action.REFERRAL,
            "referrer_membership_id": alice.id,
            "idempotency_key": "ref-1",
        }
        await record_action(db, actor, **args)
        again = await record_action(db, actor, **args)
        assert again.earned.movement is not None
        assert again.earned.movement.replayed


class TestRuleTerms:
    @pytest.mark.parametrize(
        ("terms", "field"),
        [
            (TermsInput(points=5), "action"),
            (TermsInput(action=Action.SIGN_UP), "points"),
            (TermsInput(action=Action.SIGN_UP, points=5, frequency=Frequency.DAY), "frequency"),
            (TermsInput(action=Action.SHARE, points=5, referee_points=3), "refereePoints"),
            (TermsInput(action=Action.CUSTOM, points=5), "customAction"),
            (TermsInput(action=Action.SHARE, points=-1), "points"),
            (TermsInput(action=Action.SHARE, points=5, points_per_unit=Decimal(1)), "points"),
        ],
    )
    async def test_invalid_action_rules_are_refused(
        self, db: Database, terms: TermsInput, field: str
    ) -> None:
        program = await make_program(db)
        with pytest.raises(InvalidInput) as refused:
            await create_rule(db, merchant_actor(program.merchant_id), program_id=program.id,
                              code="a", kind=RuleKind.ACTION, name="a", terms=terms)  # fmt: skip
        assert refused.value.field == (field,)


async def test_graphql_record_action(db: Database) -> None:
    program, actor = await _program(db, referral=TermsInput(
        action=Action.REFERRAL, points=50, referee_points=20))  # fmt: skip
    alice, bob = await make_membership(db, program), await make_membership(db, program)
    query = """mutation($input: RecordActionInput!) { recordAction(input: $input) {
        earned { entry { points } breakdown { points lines { kind code points } } replayed }
        referrer { entry { points } }
        userErrors { code field } } }"""
    variables = {"input": {"membershipId": gid("Membership", bob.id), "action": "REFERRAL",
                           "referrerMembershipId": gid("Membership", alice.id),
                           "idempotencyKey": "g-1"}}  # fmt: skip
    data = await ok(db, actor, query, variables)
    assert data["recordAction"] == {
        "earned": {"entry": {"points": 20}, "replayed": False, "breakdown": {
            "points": 20, "lines": [{"kind": "action", "code": "referral", "points": 20}]}},
        "referrer": {"entry": {"points": 50}},
        "userErrors": [],
    }  # fmt: skip
    variables["input"]["idempotencyKey"] = "g-2"
    variables["input"]["membershipId"] = gid("Membership", alice.id)
    variables["input"]["referrerMembershipId"] = gid("Membership", bob.id)
    again = await ok(db, actor, query, variables)
    assert again["recordAction"]["userErrors"] == [
        {"code": "ALREADY_REWARDED", "field": ["input", "action"]}
    ]
