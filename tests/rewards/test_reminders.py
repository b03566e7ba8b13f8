"""Reminders: members with points expiring soon, and the rewards they can afford."""

from __future__ import annotations

import pytest

from alliance.db.engine import Database
from alliance.errors import Forbidden, NotFound
from alliance.programs.models import ExpiryPolicy
from alliance.rewards.reminders import expiry_reminders
from tests.factories import AUDITOR, OPERATOR, make_program, member_actor, merchant_actor
from tests.rewards.helpers import make_reward, member_with_points, reserve


async def test_expiring_members_with_affordable_rewards(db: Database) -> None:
    program = await make_program(db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN,
                                 expiry_value=5)  # fmt: skip
    cheap = await make_reward(db, program, points_price=50)
    dear = await make_reward(db, program, points_price=200)
    await make_reward(db, program, points_price=60, stock=0)  # sold out
    poor = await member_with_points(db, program, 80)
    rich = await member_with_points(db, program, 300)
    await member_with_points(db, program, 0)  # nothing to expire
    await reserve(db, program, cheap, rich)  # 250 spendable left
    merchant = merchant_actor(program.merchant_id)

    page = await expiry_reminders(db, merchant, program_id=program.id, within_days=7,
                                  first=10, after=None)  # fmt: skip
    found = {r.membership_id: r for r in page.items}
    assert set(found) == {poor.id, rich.id}
    assert (found[poor.id].points_expiring, found[poor.id].spendable) == (80, 80)
    assert found[poor.id].affordable_reward_ids == [cheap.id]
    assert found[rich.id].affordable_reward_ids == [dear.id, cheap.id]  # dearest first
    assert found[rich.id].spendable == 250
    assert (await expiry_reminders(db, OPERATOR, program_id=program.id, within_days=3,
                                   first=10, after=None)).items == []  # fmt: skip

    first = await expiry_reminders(db, merchant, program_id=program.id, within_days=7,
                                   first=1, after=None)  # fmt: skip
    assert first.has_next_page
    rest = await expiry_reminders(db, merchant, program_id=program.id, within_days=7,
                                  first=1, after=first.items[0].membership_id)  # fmt: skip
    assert [r.membership_id for r in rest.items] == [rich.id]

    stranger = merchant_actor((await make_program(db)).merchant_id)
    with pytest.raises(NotFound):
        await expiry_reminders(db, stranger, program_id=program.id, within_days=7, first=10,
                               after=None)  # fmt: skip
    for actor in (AUDITOR, member_actor(poor, program.merchant_id)):
        with pytest.raises(Forbidden):
            await expiry_reminders(db, actor, program_id=program.id, within_days=7, first=10,
                                   after=None)  # fmt: skip
