"""Property-based: any sequence of awards, spends, expiries, replays and key reuses keeps
the ledger whole.

A Hypothesis state machine drives the real use cases against PostgreSQL and
checks, after every step, that the database agrees with a trivial model and
that `verify_ledger` finds nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import IdempotencyKeyReused, InsufficientPoints
from alliance.ledger.expiry import expire_points
from alliance.ledger.service import Movement, award_points, spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import memberships_by_id
from tests.database import verify_and_reset
from tests.factories import OPERATOR, make_membership, make_program, merchant_actor

T = TypeVar("T")


class LedgerMachine(RuleBasedStateMachine):
    url: str
    app_settings: Settings
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url, self.app_settings)
        self.model: dict[int, int] = {}
        self.keys = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    @initialize()
    def open_accounts(self) -> None:
        program = self.run(make_program(self.db))
        self.actor = merchant_actor(program.merchant_id)
        for _ in range(3):
            membership = self.run(make_membership(self.db, program))
            self.model[membership.id] = 0

    def _key(self) -> str:
        self.keys += 1
        return f"key-{self.keys}"

    @rule(target=requests, who=st.integers(0, 2), points=st.integers(1, 500))
    def award(self, who: int, points: int) -> tuple[str, str, int, int, Movement]:
        membership = list(self.model)[who]
        key = self._key()
        movement = self.run(
            award_points(
                self.db,
                self.actor,
                membership_id=membership,
                points=points,
                reason="r",
                idempotency_key=key,
            )
        )
        self.model[membership] += points
        assert movement.balance_after == self.model[membership]
        return ("award", key, membership, points, movement)

    @rule(target=requests, who=st.integers(0, 2), points=st.integers(1, 700))
    def spend(self, who: int, points: int) -> tuple[str, str, int, int, Movement | None]:
        membership = list(self.model)[who]
        key = self._key()
        try:
            movement = self.run(
                spend_points(
                    self.db,
                    self.actor,
                    membership_id=membership,
                    points=points,
                    reason="r",
                    idempotency_key=key,
                )
            )
        except InsufficientPoints:
            assert self.model[membership] < points
            return ("spend", key, membership, points, None)
        assert self.model[membership] >= points
        self.model[membership] -= points
        assert movement.balance_after == self.model[membership]
        return ("spend", key, membership, points, movement)

    @rule(request=requests)
    def replay(self, request: tuple[str, str, int, int, Movement | None]) -> None:
        kind, key, membership, points, first = request
        if first is None:
            return  # a refused spend left nothing to replay
        move = award_points if kind == "award" else spend_points
        again = self.run(
            move(
                self.db,
                self.actor,
                membership_id=membership,
                points=points,
                reason="r",
                idempotency_key=key,
            )
        )
        assert again.replayed
        assert (again.transaction_id, again.balance_after) == (
            first.transaction_id,
            first.balance_after,
        )

    @rule(request=requests, extra=st.integers(1, 5))
    def reuse_key(self, request: tuple[str, str, int, int, Movement | None], extra: int) -> None:
        _kind, key, membership, points, first = request
        if first is None:
            return
        with pytest.raises(IdempotencyKeyReused):
            self.run(
                award_points(
                    self.db,
                    self.actor,
                    membership_id=membership,
                    points=points + extra,
                    reason="r",
                    idempotency_key=key,
                )
            )

    @rule(who=st.integers(0, 2))
    def expire_oldest_lot(self, who: int) -> None:
        """A lot falls due and the expiry job runs: the balance loses its remainder."""
        membership = list(self.model)[who]

        async def expire() -> int:
            row = await self.db.fetch_one(
                "UPDATE lot SET expires_at = now() - interval '1 second'"
                " WHERE id = (SELECT l.id FROM lot l JOIN account a ON a.id = l.account_id"
                "             WHERE a.membership_id = %(m)s AND l.remaining > 0"
                "             ORDER BY l.id LIMIT 1)"
                " RETURNING remaining",
                {"m": membership},
            )
            await expire_points(self.db)
            return 0 if row is None else int(row[0])

        self.model[membership] -= self.run(expire())

    @invariant()
    def ledger_matches_model(self) -> None:
        if not self.model:
            return

        async def check() -> None:
            assert await verify_ledger(self.db) == []
            found = await memberships_by_id(self.db, OPERATOR, list(self.model))
            assert {key: record.balance for key, record in found.items()} == self.model

        self.run(check())

    def teardown(self) -> None:
        try:
            self.run(verify_and_reset(self.db))
        finally:
            self.run(self.db.dispose())
            self.loop.close()


def test_ledger_state_machine(database_url: str, settings: Settings) -> None:
    LedgerMachine.url = database_url
    LedgerMachine.app_settings = settings
    run_state_machine_as_test(LedgerMachine, settings=_examples())


def _examples() -> Any:
    slow = os.environ.get("ALLIANCE_SLOW") == "1"
    return hypothesis_settings(
        max_examples=300 if slow else 30,
        stateful_step_count=50 if slow else 25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
