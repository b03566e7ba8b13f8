"""Property-based: any sequence of awards, spends, reservations, fulfilments, completions,
cancellations, lapses and gifts keeps points, holds and stock whole.

A Hypothesis state machine drives the real use cases against PostgreSQL and checks after
every step that balances, held points and stock agree with a small model, and that
`verify_ledger` (with the rewards checks) finds nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import (
    InsufficientPoints,
    InvalidInput,
    InvalidTransition,
    LimitReached,
    OutOfStock,
)
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import MembershipRecord
from alliance.rewards.gifting import give_points, set_gift_policy
from alliance.rewards.redemptions import (
    cancel_redemption,
    complete_redemption,
    fulfil_redemption,
    release_expired_redemptions,
    reserve_reward,
)
from tests.database import verify_and_reset
from tests.factories import give_points as award
from tests.factories import make_membership, make_program, merchant_actor
from tests.rewards.helpers import make_reward

T = TypeVar("T")
MAX_GIFT, DAILY_GIFTS = 100, 300


@dataclass
class Shelf:
    id: int
    price: int
    stock: int | None
    limit: int | None


class RewardsMachine(RuleBasedStateMachine):
    url: str
    app_settings: Settings

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url, self.app_settings)
        self.balance: dict[int, int] = {}
        self.held: dict[int, int] = {}
        self.gifted: dict[int, int] = {}
        self.shelves: list[Shelf] = []
        self.redemptions: dict[int, tuple[int, Shelf, str]] = {}  # id -> member, shelf, status
        self.memberships: list[MembershipRecord] = []
        self.keys = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def _key(self) -> str:
        self.keys += 1
        return f"key-{self.keys}"

    @initialize()
    def open_shop(self) -> None:
        program = self.run(make_program(self.db))
        self.program = program
        self.actor = merchant_actor(program.merchant_id)
        for _ in range(3):
            membership = self.run(make_membership(self.db, program))
            self.balance[membership.id], self.held[membership.id] = 0, 0
            self.gifted[membership.id] = 0
            self.memberships.append(membership)
        for price, stock, limit in ((120, 4, 2), (40, None, None)):
            reward = self.run(make_reward(self.db, program, points_price=price, stock=stock,
                                          limit_total=limit))  # fmt: skip
            self.shelves.append(Shelf(reward.id, price, stock, limit))
        self.run(set_gift_policy(self.db, self.actor, program_id=program.id, enabled=True,
                                 max_points_per_gift=MAX_GIFT,
                                 daily_limit_points=DAILY_GIFTS))  # fmt: skip

    def _member(self, who: int) -> int:
        return self.memberships[who].id

    def _open(self, status: str, pick: int) -> int | None:
        found = [r for r, (_, _, s) in self.redemptions.items() if s == status]
        return found[pick % len(found)] if found else None

    @rule(who=st.integers(0, 2), points=st.integers(1, 400))
    def award(self, who: int, points: int) -> None:
        membership = self.memberships[who]
        self.run(award(self.db, membership, self.program, points))
        self.balance[membership.id] += points

    @rule(who=st.integers(0, 2), points=st.integers(1, 300))
    def spend(self, who: int, points: int) -> None:
        member = self._member(who)
        work = spend_points(self.db, self.actor, membership_id=member, points=points,
                            reason="r", idempotency_key=self._key())  # fmt: skip
        if self.balance[member] - self.held[member] < points:
            with pytest.raises(InsufficientPoints):
                self.run(work)
            return
        self.run(work)
        self.balance[member] -= points

    @rule(who=st.integers(0, 2), which=st.integers(0, 1))
    def reserve(self, who: int, which: int) -> None:
        member, shelf = self._member(who), self.shelves[which]
        work = reserve_reward(self.db, self.actor, membership_id=member, reward_id=shelf.id,
                              idempotency_key=self._key())  # fmt: skip
        standing = sum(1 for m, s, status in self.redemptions.values()
                       if m == member and s is shelf
                       and status in ("reserved", "fulfilled", "completed"))  # fmt: skip
        expected: type[Exception] | None = None
        if shelf.stock == 0:
            expected = OutOfStock
        elif shelf.limit is not None and standing >= shelf.limit:
            expected = LimitReached
        elif self.balance[member] - self.held[member] < shelf.price:
            expected = InsufficientPoints
        if expected is not None:
            with pytest.raises(expected):
                self.run(work)
            return
        done = self.run(work)
        self.redemptions[done.redemption.id] = (member, shelf, "reserved")
        self.held[member] += shelf.price
        if shelf.stock is not None:
            shelf.stock -= 1

    def _step(self, redemption: int, status: str, into: str) -> None:
        member, shelf, _ = self.redemptions[redemption]
        self.redemptions[redemption] = (member, shelf, into)
        if into in ("cancelled", "expired", "completed"):
            self.held[member] -= shelf.price
        if into == "completed":
            self.balance[member] -= shelf.price
        elif shelf.stock is not None:
            shelf.stock += 1

    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["reserved", "fulfilled", "completed", "cancelled", "expired"]),
    )
    def fulfil(self, pick: int, status: str) -> None:
        redemption = self._open(status, pick)
        if redemption is None:
            return
        work = fulfil_redemption(self.db, self.actor, redemption_id=redemption)
        if status not in ("reserved", "fulfilled"):
            with pytest.raises(InvalidTransition):
                self.run(work)
            return
        assert self.run(work).status == "fulfilled"
        member, shelf, _ = self.redemptions[redemption]
        self.redemptions[redemption] = (member, shelf, "fulfilled")

    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["reserved", "fulfilled", "completed", "cancelled", "expired"]),
    )
    def complete(self, pick: int, status: str) -> None:
        redemption = self._open(status, pick)
        if redemption is None:
            return
        work = complete_redemption(self.db, self.actor, redemption_id=redemption)
        if status not in ("fulfilled", "completed"):
            with pytest.raises(InvalidTransition):
                self.run(work)
            return
        assert self.run(work).status == "completed"
        if status == "fulfilled":
            self._step(redemption, status, "completed")

    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["reserved", "fulfilled", "completed", "cancelled", "expired"]),
    )
    def cancel(self, pick: int, status: str) -> None:
        redemption = self._open(status, pick)
        if redemption is None:
            return
        work = cancel_redemption(self.db, self.actor, redemption_id=redemption)
        if status in ("completed", "expired"):
            with pytest.raises(InvalidTransition):
                self.run(work)
            return
        assert self.run(work).status == "cancelled"
        if status != "cancelled":
            self._step(redemption, status, "cancelled")

    @rule(pick=st.integers(0, 50), status=st.sampled_from(["reserved", "fulfilled"]))
    def lapse(self, pick: int, status: str) -> None:
        """A deadline passes and the job runs (twice at once)."""
        redemption = self._open(status, pick)
        if redemption is None:
            return

        async def lapse() -> int:
            await self.db.fetch_one(
                "UPDATE redemption SET expires_at = now() - interval '1 second'"
                " WHERE id = %(r)s RETURNING id", {"r": redemption},
            )  # fmt: skip
            runs = await asyncio.gather(release_expired_redemptions(self.db),
                                        release_expired_redemptions(self.db))  # fmt: skip
            return sum(runs)

        assert self.run(lapse()) == 1
        self._step(redemption, status, "expired")

    @rule(giver=st.integers(0, 2), taker=st.integers(0, 2), points=st.integers(1, 150))
    def gift(self, giver: int, taker: int, points: int) -> None:
        if giver == taker:
            return
        sender, recipient = self._member(giver), self._member(taker)
        work = give_points(self.db, self.actor, from_membership_id=sender,
                           to_membership_id=recipient, points=points,
                           idempotency_key=self._key())  # fmt: skip
        expected: type[Exception] | None = None
        if points > MAX_GIFT:
            expected = InvalidInput
        elif self.gifted[sender] + points > DAILY_GIFTS:
            expected = LimitReached
        elif self.balance[sender] - self.held[sender] < points:
            expected = InsufficientPoints
        if expected is not None:
            with pytest.raises(expected):
                self.run(work)
            return
        self.run(work)
        self.balance[sender] -= points
        self.balance[recipient] += points
        self.gifted[sender] += points

    @invariant()
    def books_match_the_model(self) -> None:
        if not self.shelves:
            return

        async def check() -> None:
            assert await verify_ledger(self.db) == []
            rows = await self.db.fetch_all(
                "SELECT membership_id, balance, held FROM account WHERE membership_id = ANY(%(m)s)",
                {"m": list(self.balance)},
            )
            assert {r[0]: (r[1], r[2]) for r in rows} == {
                m: (self.balance[m], self.held[m]) for m in self.balance}  # fmt: skip
            stock = await self.db.fetch_all(
                "SELECT reward_id, sum(stock)::bigint FROM reward_stock_slot"
                " WHERE reward_id = ANY(%(r)s) GROUP BY reward_id",
                {"r": [s.id for s in self.shelves]},
            )
            assert dict(stock) == {s.id: s.stock for s in self.shelves}

        self.run(check())

    def teardown(self) -> None:
        try:
            self.run(verify_and_reset(self.db))
        finally:
            self.run(self.db.dispose())
            self.loop.close()


def test_rewards_state_machine(database_url: str, settings: Settings) -> None:
    RewardsMachine.url = database_url
    RewardsMachine.app_settings = settings
    slow = os.environ.get("ALLIANCE_SLOW") == "1"
    run_state_machine_as_test(RewardsMachine, settings=hypothesis_settings(
        max_examples=200 if slow else 25, stateful_step_count=60 if slow else 30,
        deadline=None, suppress_health_check=[HealthCheck.too_slow],
    ))  # fmt: skip
