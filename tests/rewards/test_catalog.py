"""The catalog: create, update as a new version, archive; browse, sort, page, afford."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alliance.db.engine import Database
from alliance.errors import AlreadyExists, Forbidden, InvalidInput, NotFound
from alliance.rewards.catalog import (
    RewardCursor,
    RewardFilter,
    RewardSort,
    archive_reward,
    browse_rewards,
    can_afford_by_reward,
    create_reward,
    update_reward,
)
from alliance.rewards.models import RewardKind
from tests.factories import OPERATOR, make_program, member_actor, merchant_actor
from tests.rewards.helpers import TERMS, make_reward, member_with_points, reserve, stock


async def test_an_update_is_a_new_version_and_redemptions_keep_theirs(db: Database) -> None:
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    reward = await make_reward(db, program, stock=2, cash_price=Decimal("9.90"),
                               image_urls=("https://img.example/tea.png",))  # fmt: skip
    assert (reward.version, reward.stock, reward.cash_price) == (1, 2, Decimal("9.90"))
    assert (reward.name, reward.image_urls) == ("Free tea", ["https://img.example/tea.png"])
    membership = await member_with_points(db, program)
    red = (await reserve(db, program, reward, membership)).redemption
    updated = await update_reward(db, merchant, reward_id=reward.id,
                                  terms=replace(TERMS, points_price=150), add_stock=3)  # fmt: skip
    assert (updated.version, updated.points_price, updated.stock) == (2, 150, 4)
    assert updated.version_id != reward.version_id
    row = await db.fetch_one(
        "SELECT v.version, v.points_price FROM redemption r JOIN reward_version v"
        " ON v.id = r.reward_version_id WHERE r.id = %(r)s", {"r": red.id},
    )  # fmt: skip
    assert row == (1, 100)
    later = (await reserve(db, program, updated, membership)).redemption
    assert later.points == 150
    assert await stock(db, reward) == (3, 2)
    archived = await archive_reward(db, merchant, reward_id=reward.id)
    assert archived.status == "archived"
    with pytest.raises(InvalidInput):
        await update_reward(db, merchant, reward_id=reward.id, terms=TERMS)


async def test_who_manages_the_catalog_and_bad_terms(db: Database) -> None:
    program = await make_program(db)
    merchant = merchant_actor(program.merchant_id)
    stranger = merchant_actor((await make_program(db)).merchant_id)
    with pytest.raises(NotFound):
        await create_reward(db, stranger, program_id=program.id, code="x", terms=TERMS, stock=1)
    with pytest.raises(Forbidden):
        await create_reward(db, OPERATOR, program_id=program.id, code="x", terms=TERMS, stock=1)
    await create_reward(db, merchant, program_id=program.id, code="tea", terms=TERMS, stock=1)
    with pytest.raises(AlreadyExists):
        await create_reward(db, merchant, program_id=program.id, code="tea", terms=TERMS,
                            stock=1)  # fmt: skip
    now = datetime.now(UTC)
    bad = {
        "name": replace(TERMS, name=" "),
        "pointsPrice": replace(TERMS, points_price=0),
        "cashPrice": replace(TERMS, cash_price=Decimal("-1")),
        "limitPerPeriod": replace(TERMS, limit_per_period=2),
        "validUntil": replace(TERMS, valid_from=now, valid_until=now - timedelta(days=1)),
        "imageUrls": replace(TERMS, image_urls=("javascript:alert(1)",)),
        "tierCodes": replace(TERMS, tier_codes=("Not A Code",)),
        "reserveMinutes": replace(TERMS, reserve_minutes=0),
        "validFrom": replace(TERMS, valid_from=datetime(2030, 1, 1)),  # no time zone
    }
    for field, terms in bad.items():
        with pytest.raises(InvalidInput) as refused:
            await create_reward(db, merchant, program_id=program.id, code="bad", terms=terms,
                                stock=1)  # fmt: skip
        assert refused.value.field == (field,)
    with pytest.raises(InvalidInput):
        await create_reward(db, merchant, program_id=program.id, code="bad", terms=TERMS,
                            stock=-1)  # fmt: skip
    unlimited = await make_reward(db, program, stock=None)
    with pytest.raises(InvalidInput):
        await update_reward(db, merchant, reward_id=unlimited.id, terms=TERMS, add_stock=5)
    with pytest.raises(NotFound):
        await archive_reward(db, stranger, reward_id=unlimited.id)


async def test_browse_sorted_filtered_and_paged(db: Database) -> None:
    program = await make_program(db)
    prices = [300, 100, 200, 500, 400]
    rewards = [await make_reward(db, program, points_price=p, stock=None,
                                 kind=RewardKind.GOODS if p > 250 else RewardKind.COUPON)
               for p in prices]  # fmt: skip
    await make_reward(db, program, stock=0)  # sold out: hidden by default
    membership = await member_with_points(db, program, 250)
    for _ in range(2):
        await reserve(db, program, rewards[1], membership)  # 100 twice: most popular
    await reserve(db, program, rewards[1 + 1], await member_with_points(db, program, 250))

    async def all_pages(sort: RewardSort, filters: RewardFilter | None = None) -> list[int]:
        seen: list[int] = []
        after = None
        while True:
            page = await browse_rewards(db, OPERATOR, program_id=program.id,
                                        filters=filters or RewardFilter(), sort=sort, first=2,
                                        after=after)  # fmt: skip
            seen += [r.points_price for r in page.page.items]
            if not page.page.has_next_page:
                return seen
            after = RewardCursor.decode(page.cursors[-1], sort)

    assert await all_pages(RewardSort.PRICE_ASC) == [100, 200, 300, 400, 500]
    assert await all_pages(RewardSort.PRICE_DESC) == [500, 400, 300, 200, 100]
    assert (await all_pages(RewardSort.POPULARITY))[:2] == [100, 200]
    assert await all_pages(RewardSort.NEWEST) == [400, 500, 200, 100, 300]
    coupons = RewardFilter(kinds=(RewardKind.COUPON,), max_points=150)
    assert await all_pages(RewardSort.PRICE_ASC, coupons) == [100]
    everything = RewardFilter(available_only=False)
    assert len(await all_pages(RewardSort.PRICE_ASC, everything)) == 6
    with pytest.raises(InvalidInput):
        RewardCursor.decode("garbage", RewardSort.PRICE_ASC)
    other = RewardCursor(RewardSort.PRICE_DESC, 1, 1).encode()
    with pytest.raises(InvalidInput):  # a cursor of another order
        RewardCursor.decode(other, RewardSort.PRICE_ASC)

    member = member_actor(membership, program.merchant_id)  # 250 - 200 held = 50 spendable
    affordable = await browse_rewards(
        db, member, program_id=program.id, filters=RewardFilter(affordable_only=True),
        sort=RewardSort.PRICE_ASC, first=10, after=None,
    )  # fmt: skip
    assert affordable.page.items == []
    rich = await member_with_points(db, program, 450)
    rich_actor = member_actor(rich, program.merchant_id)
    afford = await can_afford_by_reward(db, rich_actor, [r.id for r in rewards])
    assert [afford[r.id] for r in rewards] == [True, True, True, False, True]
    assert (await can_afford_by_reward(db, OPERATOR, [rewards[0].id])) == {rewards[0].id: None}
    with pytest.raises(InvalidInput):
        await browse_rewards(db, OPERATOR, program_id=program.id,
                             filters=RewardFilter(affordable_only=True),
                             sort=RewardSort.PRICE_ASC, first=10, after=None)  # fmt: skip
