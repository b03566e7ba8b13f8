"""Appeals: open → in_review → resolved (through maker-checker) or rejected."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from alliance.adjustments.models import AdjustmentDirection
from alliance.adjustments.service import (
    approve_adjustment,
    reject_adjustment,
    set_adjustment_policy,
)
from alliance.appeals.models import AppealReason
from alliance.appeals.queries import appeal_statistics, appeals_page, messages_of_appeals
from alliance.appeals.service import (
    open_appeal,
    post_appeal_message,
    reject_appeal,
    resolve_appeal,
)
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import DomainError, ErrorCode
from alliance.ledger.service import Movement
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    AUDITOR,
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
)

MISSING = AppealReason.MISSING_POINTS


def staff(merchant_id: int, name: str) -> Actor:
    client = f"staff-{name}-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


async def _world(db: Database) -> tuple[ProgramRecord, MembershipRecord, Actor, Movement]:
    program = await make_program(db)
    membership = await make_membership(db, program)
    earned = await give_points(db, membership, program, 100)
    return program, membership, member_actor(membership, program.merchant_id), earned


async def _code(call: Any) -> ErrorCode:
    with pytest.raises(DomainError) as raised:
        await call
    return raised.value.code


async def _events(db: Database) -> list[tuple[Any, ...]]:
    return await db.fetch_all(
        "SELECT payload->>'change', payload->>'status' FROM outbox_event"
        " WHERE topic = 'appeal.updated' ORDER BY id"
    )


async def _balance(db: Database, membership: MembershipRecord) -> int:
    row = await db.fetch_one(
        "SELECT balance FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0])


class TestOpen:
    async def test_member_opens_on_own_entry_with_sla(self, db: Database) -> None:
        _, _, member, earned = await _world(db)
        appeal = await open_appeal(
            db, member, entry_id=earned.entry_id, reason=MISSING, body="I spent 250, not 100"
        )
        assert (appeal.status, appeal.transaction_id) == ("open", earned.transaction_id)
        assert appeal.respond_by < appeal.resolve_by
        assert appeal.first_response_at is None
        assert await _events(db) == [("opened", "open")]
        again = open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="again")
        assert await _code(again) is ErrorCode.ALREADY_EXISTS

    async def test_not_on_someone_elses_entry(self, db: Database) -> None:
        program, _, member, _ = await _world(db)
        other = await make_membership(db, program)
        theirs = await give_points(db, other, program, 5)
        call = open_appeal(db, member, entry_id=theirs.entry_id, reason=MISSING, body="x")
        assert await _code(call) is ErrorCode.NOT_FOUND

    async def test_only_members_open(self, db: Database) -> None:
        program, _, _, earned = await _world(db)
        for actor in (staff(program.merchant_id, "a"), OPERATOR):
            call = open_appeal(db, actor, entry_id=earned.entry_id, reason=MISSING, body="x")
            assert await _code(call) is ErrorCode.FORBIDDEN


class TestThread:
    async def test_staff_reply_puts_it_in_review_and_both_see_the_thread(
        self, db: Database
    ) -> None:
        program, _, member, earned = await _world(db)
        appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING,
                                   body="where are my points?")  # fmt: skip
        after_member = await post_appeal_message(db, member, appeal_id=appeal.id, body="hello?")
        assert after_member.status == "open"
        helper = staff(program.merchant_id, "a")
        reviewed = await post_appeal_message(db, helper, appeal_id=appeal.id, body="checking")
        assert reviewed.status == "in_review"
        assert reviewed.first_response_at is not None
        for reader in (member, helper, AUDITOR):
            pages = await messages_of_appeals(db, reader, [appeal.id], first=10, after=None)
            messages, more = pages[appeal.id]
            assert [(m.author_role, m.body) for m in messages] == [
                ("member", "where are my points?"),
                ("member", "hello?"),
                ("merchant", "checking"),
            ]
            assert not more
        stranger = staff((await make_program(db)).merchant_id, "x")
        pages = await messages_of_appeals(db, stranger, [appeal.id], first=10, after=None)
        assert pages[appeal.id] == ([], False)
        call = post_appeal_message(db, stranger, appeal_id=appeal.id, body="hi")
        assert await _code(call) is ErrorCode.NOT_FOUND

    async def test_the_thread_is_append_only(self, db: Database) -> None:
        _, _, member, earned = await _world(db)
        await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        with pytest.raises(psycopg.DatabaseError, match="append-only"):
            async with db.connection() as conn:
                await conn.execute("UPDATE appeal_message SET body = 'never said that'")


class TestResolve:
    async def test_below_threshold_resolves_at_once(self, db: Database) -> None:
        program, membership, member, earned = await _world(db)
        helper = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, helper, program_id=program.id, approval_threshold=500)
        appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        done = await resolve_appeal(
            db, helper, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=150,
            note="receipt checked: 250 spent", idempotency_key="appeal-1",
        )  # fmt: skip
        assert done.adjustment.status == "posted"
        assert done.adjustment.reason_code == "appeal"
        assert (done.appeal.status, done.appeal.adjustment_id) == ("resolved", done.adjustment.id)
        assert done.appeal.closed_at is not None
        assert await _balance(db, membership) == 250
        replay = await resolve_appeal(
            db, helper, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=150,
            note="receipt checked: 250 spent", idempotency_key="appeal-1",
        )  # fmt: skip
        assert replay.adjustment.replayed
        assert await _balance(db, membership) == 250
        later = reject_appeal(db, helper, appeal_id=appeal.id, reason="no")
        assert await _code(later) is ErrorCode.INVALID_TRANSITION
        assert [e[0] for e in await _events(db)] == ["opened", "resolution_proposed"]

    async def test_above_threshold_waits_for_the_checker(self, db: Database) -> None:
        program, membership, member, earned = await _world(db)
        maker, checker = staff(program.merchant_id, "a"), staff(program.merchant_id, "b")
        appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        proposed = await resolve_appeal(
            db, maker, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=150,
            note="first try", idempotency_key="appeal-1",
        )  # fmt: skip
        assert (proposed.appeal.status, proposed.adjustment.status) == ("in_review", "pending")
        # While it waits, neither another proposal nor a rejection of the appeal.
        another = resolve_appeal(
            db, maker, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=1,
            note="x", idempotency_key="appeal-2",
        )  # fmt: skip
        assert await _code(another) is ErrorCode.INVALID_TRANSITION
        assert await _code(reject_appeal(db, maker, appeal_id=appeal.id, reason="no")) is (
            ErrorCode.INVALID_TRANSITION
        )
        # The checker refuses the first proposal; a second one is approved.
        await reject_adjustment(db, checker, adjustment_id=proposed.adjustment.id, reason="150?")
        second = await resolve_appeal(
            db, maker, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=149,
            note="second try", idempotency_key="appeal-3",
        )  # fmt: skip
        assert second.appeal.status == "in_review"
        assert await _code(approve_adjustment(db, maker, adjustment_id=second.adjustment.id)) is (
            ErrorCode.SELF_APPROVAL
        )
        await approve_adjustment(db, checker, adjustment_id=second.adjustment.id)
        (status, adjustment_id) = (
            await db.fetch_all(
                "SELECT status, adjustment_id FROM appeal WHERE id = %(a)s", {"a": appeal.id}
            )
        )[0]
        assert (status, adjustment_id) == ("resolved", second.adjustment.id)
        assert await _balance(db, membership) == 249
        assert [e[1] for e in await _events(db)][-1] == "resolved"

    async def test_reject_with_reason(self, db: Database) -> None:
        program, membership, member, earned = await _world(db)
        appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        helper = staff(program.merchant_id, "a")
        blank = reject_appeal(db, helper, appeal_id=appeal.id, reason=" ")
        assert await _code(blank) is ErrorCode.INVALID_INPUT
        rejected = await reject_appeal(db, helper, appeal_id=appeal.id, reason="points arrive "
                                       "after the 7-day return window")  # fmt: skip
        assert (rejected.status, rejected.first_response_at is not None) == ("rejected", True)
        closed = post_appeal_message(db, member, appeal_id=appeal.id, body="but")
        assert await _code(closed) is ErrorCode.INVALID_TRANSITION
        # A closed appeal does not block a new one on the same entry.
        await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="again")
        assert await _balance(db, membership) == 100
        actions = await db.fetch_all(
            "SELECT action FROM audit_record WHERE target = %(t)s ORDER BY id",
            {"t": f"appeal:{appeal.id}"},
        )
        assert actions == [("appeal.open",), ("appeal.reject",)]


class TestVisibilityAndStatistics:
    async def test_each_side_sees_its_own(self, db: Database) -> None:
        program, _, member, earned = await _world(db)
        appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        _, _, other_member, other_earned = await _world(db)
        await open_appeal(
            db, other_member, entry_id=other_earned.entry_id, reason=MISSING, body="y"
        )
        for reader, expected in (
            (member, [appeal.id]),
            (staff(program.merchant_id, "a"), [appeal.id]),
        ):
            items, _ = await appeals_page(db, reader, first=10, after=None)
            assert [a.id for a in items] == expected
        everyone, _ = await appeals_page(db, OPERATOR, first=10, after=None)
        assert len(everyone) == 2

    async def test_statistics_per_merchant(self, db: Database) -> None:
        program, _, member, earned = await _world(db)
        first = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
        await reject_appeal(db, staff(program.merchant_id, "a"), appeal_id=first.id, reason="no")
        await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="again")
        async with db.connection() as conn:  # one appeal unanswered past its deadline
            await conn.execute(
                "UPDATE appeal SET respond_by = now() - interval '1 hour' WHERE status = 'open'"
            )
        (stats,) = await appeal_statistics(db, AUDITOR)
        assert (stats.merchant_id, stats.total, stats.open, stats.rejected) == (
            program.merchant_id, 2, 1, 1,
        )  # fmt: skip
        assert stats.response_overdue == 1
        assert stats.mean_response_seconds is not None
        with pytest.raises(DomainError):
            await appeal_statistics(db, staff(program.merchant_id, "a"))


async def test_verify_finds_an_appeal_resolved_without_its_adjustment(db: Database) -> None:
    from alliance.ledger.verify import verify_ledger

    program, _, member, earned = await _world(db)
    helper = staff(program.merchant_id, "a")
    await set_adjustment_policy(db, helper, program_id=program.id, approval_threshold=500)
    appeal = await open_appeal(db, member, entry_id=earned.entry_id, reason=MISSING, body="x")
    done = await resolve_appeal(
        db, helper, appeal_id=appeal.id, direction=AdjustmentDirection.CREDIT, points=5,
        note="ok", idempotency_key="v-1",
    )  # fmt: skip
    assert await verify_ledger(db) == []
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE appeal SET adjustment_id = NULL WHERE id = %(a)s", {"a": appeal.id}
        )
    found = [v.check for v in await verify_ledger(db)]
    assert found == ["appeals_resolved_by_posted_adjustments"]
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE appeal SET adjustment_id = %(r)s WHERE id = %(a)s",
            {"a": appeal.id, "r": done.adjustment.id},
        )
