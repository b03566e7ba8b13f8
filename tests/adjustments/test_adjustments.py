"""Manual adjustments: posted at once below the threshold, maker-checker above it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import psycopg
import pytest

from alliance.adjustments.models import AdjustmentDirection, AdjustmentReason
from alliance.adjustments.service import (
    AdjustmentView,
    approve_adjustment,
    expire_adjustments,
    reject_adjustment,
    request_adjustment,
    set_adjustment_policy,
)
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import DomainError, ErrorCode
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import MembershipRecord
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    AUDITOR,
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)

CREDIT, DEBIT = AdjustmentDirection.CREDIT, AdjustmentDirection.DEBIT
_keys = (f"adj-{n}" for n in itertools.count(1))


def staff(merchant_id: int, name: str) -> Actor:
    """Another OAuth client of the merchant: another staff identity."""
    client = f"staff-{name}-{merchant_id}"
    return Actor(Role.MERCHANT, f"client:{client}", client, merchant_id=merchant_id)


async def _setup(db: Database, points: int = 500) -> tuple[ProgramRecord, MembershipRecord]:
    program = await make_program(db)
    membership = await make_membership(db, program)
    if points:
        await give_points(db, membership, program, points)
    return program, membership


async def _request(
    db: Database,
    actor: Actor,
    membership: MembershipRecord,
    points: int,
    direction: AdjustmentDirection = CREDIT,
    key: str | None = None,
    note: str = "till 3 short-changed the member",
) -> AdjustmentView:
    return await request_adjustment(
        db, actor, membership_id=membership.id, direction=direction, points=points,
        reason_code=AdjustmentReason.CORRECTION, note=note,
        idempotency_key=key or next(_keys),
    )  # fmt: skip


async def _balance(db: Database, membership: MembershipRecord) -> int:
    row = await db.fetch_one(
        "SELECT balance FROM account WHERE membership_id = %(m)s", {"m": membership.id}
    )
    assert row is not None
    return int(row[0])


async def _audit(db: Database, request_id: int) -> list[tuple[Any, ...]]:
    return await db.fetch_all(
        "SELECT action, actor, merchant_id, after->>'status' FROM audit_record"
        " WHERE target = %(t)s ORDER BY id",
        {"t": f"adjustment_request:{request_id}"},
    )


async def _code(call: Any) -> ErrorCode:
    with pytest.raises(DomainError) as raised:
        await call
    return raised.value.code


class TestBelowThreshold:
    async def test_credit_and_debit_post_at_once(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=1000)
        credit = await _request(db, maker, membership, 120)
        assert (credit.status, credit.needs_approval, credit.decided_by) == ("posted", False, None)
        assert credit.transaction_id is not None
        debit = await _request(db, maker, membership, 99, DEBIT)
        assert debit.status == "posted"
        assert await _balance(db, membership) == 500 + 120 - 99
        kinds = await db.fetch_all(
            "SELECT t.kind, sum(p.amount) FROM ledger_transaction t JOIN posting p"
            " ON p.transaction_id = t.id JOIN account a ON a.id = p.account_id"
            " WHERE t.id = ANY(%(ids)s) AND a.kind = 'adjustment' GROUP BY t.id, t.kind"
            " ORDER BY t.id",
            {"ids": [credit.transaction_id, debit.transaction_id]},
        )
        assert kinds == [("adjustment", -120), ("adjustment", 99)]
        events = await db.fetch_all(
            "SELECT payload->>'points' FROM outbox_event WHERE topic = 'points.adjusted'"
            " ORDER BY id"
        )
        assert events == [("120",), ("-99",)]
        assert await _audit(db, credit.id) == [
            ("adjustment.request", maker.subject, program.merchant_id, "posted")
        ]

    async def test_a_debit_beyond_spendable_points_leaves_nothing(self, db: Database) -> None:
        program, membership = await _setup(db, points=50)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=1000)
        code = await _code(_request(db, maker, membership, 51, DEBIT, key="k1"))
        assert code is ErrorCode.INSUFFICIENT_POINTS
        assert await db.fetch_all("SELECT id FROM adjustment_request") == []
        assert await _balance(db, membership) == 50
        # Nothing was kept, so the key can be used again.
        done = await _request(db, maker, membership, 50, DEBIT, key="k1")
        assert done.status == "posted"
        assert await _balance(db, membership) == 0

    async def test_threshold_is_inclusive(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=100)
        assert (await _request(db, maker, membership, 99)).status == "posted"
        assert (await _request(db, maker, membership, 100)).status == "pending"


class TestMakerChecker:
    async def test_without_a_threshold_every_adjustment_waits(self, db: Database) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 1)
        assert (pending.status, pending.needs_approval) == ("pending", True)
        assert pending.expires_at is not None
        assert pending.transaction_id is None
        assert await _balance(db, membership) == 500

    async def test_the_maker_can_never_decide_their_own(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        pending = await _request(db, maker, membership, 300)
        assert await _code(approve_adjustment(db, maker, adjustment_id=pending.id)) is (
            ErrorCode.SELF_APPROVAL
        )
        assert (
            await _code(
                reject_adjustment(db, maker, adjustment_id=pending.id, reason="changed my mind")
            )
            is ErrorCode.SELF_APPROVAL
        )
        assert await _balance(db, membership) == 500

    async def test_the_database_refuses_a_self_decision_too(self, db: Database) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 300)
        with pytest.raises(psycopg.errors.CheckViolation, match="four_eyes"):
            async with db.connection() as conn:
                await conn.execute(
                    "UPDATE adjustment_request SET status = 'rejected', decided_by = requested_by"
                    " WHERE id = %(id)s",
                    {"id": pending.id},
                )

    async def test_another_staff_identity_approves(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker, checker = staff(program.merchant_id, "a"), staff(program.merchant_id, "b")
        pending = await _request(db, maker, membership, 300)
        posted = await approve_adjustment(db, checker, adjustment_id=pending.id, note="ok")
        assert (posted.status, posted.decided_by) == ("posted", checker.subject)
        assert posted.transaction_id is not None
        assert await _balance(db, membership) == 800
        assert await _audit(db, pending.id) == [
            ("adjustment.request", maker.subject, program.merchant_id, "pending"),
            ("adjustment.approve", checker.subject, program.merchant_id, "posted"),
        ]
        again = approve_adjustment(db, staff(program.merchant_id, "c"), adjustment_id=pending.id)
        assert await _code(again) is ErrorCode.INVALID_TRANSITION
        assert await _balance(db, membership) == 800

    async def test_another_staff_identity_rejects_with_a_reason(self, db: Database) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 300, DEBIT)
        checker = staff(program.merchant_id, "b")
        blank = reject_adjustment(db, checker, adjustment_id=pending.id, reason="  ")
        assert await _code(blank) is ErrorCode.INVALID_INPUT
        rejected = await reject_adjustment(
            db, checker, adjustment_id=pending.id, reason="no receipt"
        )
        assert (rejected.status, rejected.decision_note) == ("rejected", "no receipt")
        assert rejected.transaction_id is None
        assert await _balance(db, membership) == 500
        later = approve_adjustment(db, checker, adjustment_id=pending.id)
        assert await _code(later) is ErrorCode.INVALID_TRANSITION

    async def test_an_approved_debit_needs_the_points_then(self, db: Database) -> None:
        program, membership = await _setup(db, points=100)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 100, DEBIT)
        await spend_points(
            db, merchant_actor(program.merchant_id), membership_id=membership.id, points=10,
            reason="coffee", idempotency_key="spend-1",
        )  # fmt: skip
        checker = staff(program.merchant_id, "b")
        code = await _code(approve_adjustment(db, checker, adjustment_id=pending.id))
        assert code is ErrorCode.INSUFFICIENT_POINTS
        (status,) = (await db.fetch_all(
            "SELECT status FROM adjustment_request WHERE id = %(id)s", {"id": pending.id}
        ))[0]  # fmt: skip
        assert status == "pending"
        assert len(await _audit(db, pending.id)) == 1

    async def test_concurrent_checkers_post_once(self, db: Database) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 300)
        checkers = [staff(program.merchant_id, f"c{n}") for n in range(6)]
        results = await asyncio.gather(
            *(approve_adjustment(db, c, adjustment_id=pending.id) for c in checkers),
            return_exceptions=True,
        )
        posted = [r for r in results if isinstance(r, AdjustmentView)]
        assert len(posted) == 1
        assert all(
            getattr(r, "code", None) is ErrorCode.INVALID_TRANSITION
            for r in results
            if not isinstance(r, AdjustmentView)
        )
        assert await _balance(db, membership) == 800

    async def test_staff_of_another_merchant_see_nothing(self, db: Database) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 300)
        other = await make_program(db)
        outsider = staff(other.merchant_id, "x")
        assert await _code(approve_adjustment(db, outsider, adjustment_id=pending.id)) is (
            ErrorCode.NOT_FOUND
        )
        assert await _code(_request(db, outsider, membership, 5)) is ErrorCode.NOT_FOUND
        assert (
            await _code(
                set_adjustment_policy(db, outsider, program_id=program.id, approval_threshold=5)
            )
            is ErrorCode.NOT_FOUND
        )

    @pytest.mark.parametrize("who", ["operator", "auditor", "member"])
    async def test_only_merchant_staff_adjust(self, db: Database, who: str) -> None:
        program, membership = await _setup(db)
        pending = await _request(db, staff(program.merchant_id, "a"), membership, 300)
        actor = {
            "operator": OPERATOR,
            "auditor": AUDITOR,
            "member": member_actor(membership, program.merchant_id),
        }[who]
        assert await _code(_request(db, actor, membership, 5)) is ErrorCode.FORBIDDEN
        assert await _code(approve_adjustment(db, actor, adjustment_id=pending.id)) is (
            ErrorCode.FORBIDDEN
        )


class TestIdempotency:
    async def test_a_retry_returns_the_first_result(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=1000)
        first = await _request(db, maker, membership, 40, key="same")
        again = await _request(db, maker, membership, 40, key="same")
        assert (again.id, again.transaction_id, again.replayed) == (
            first.id,
            first.transaction_id,
            True,
        )
        assert await _balance(db, membership) == 540
        other = _request(db, maker, membership, 41, key="same")
        assert await _code(other) is ErrorCode.IDEMPOTENCY_KEY_REUSED

    async def test_concurrent_retries_post_once(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=1000)
        done = await asyncio.gather(
            *(_request(db, maker, membership, 40, key="race") for _ in range(8))
        )
        assert len({d.id for d in done}) == 1
        assert sum(not d.replayed for d in done) == 1
        assert await _balance(db, membership) == 540


class TestExpiry:
    async def _age(self, db: Database, request_id: int) -> None:
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE adjustment_request SET expires_at = now() - interval '1 second'"
                " WHERE id = %(id)s",
                {"id": request_id},
            )

    async def test_undecided_requests_expire(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        old, fresh = (
            await _request(db, maker, membership, 300),
            await _request(db, maker, membership, 301),
        )
        await self._age(db, old.id)
        checker = staff(program.merchant_id, "b")
        # Past its deadline it cannot be approved, even before the job has run.
        assert await _code(approve_adjustment(db, checker, adjustment_id=old.id)) is (
            ErrorCode.INVALID_TRANSITION
        )
        assert await expire_adjustments(db, batch_size=1) == 1
        assert await expire_adjustments(db) == 0
        statuses: dict[int, str] = dict(
            await db.fetch_all("SELECT id, status FROM adjustment_request")
        )
        assert statuses == {old.id: "expired", fresh.id: "pending"}
        assert await _audit(db, old.id) == [
            ("adjustment.request", maker.subject, program.merchant_id, "pending"),
            ("adjustment.expire", "system:adjustments", program.merchant_id, "expired"),
        ]
        assert await _balance(db, membership) == 500


class TestVerify:
    async def test_a_request_that_disagrees_with_the_ledger_is_found(self, db: Database) -> None:
        program, membership = await _setup(db)
        maker = staff(program.merchant_id, "a")
        await set_adjustment_policy(db, maker, program_id=program.id, approval_threshold=1000)
        done = await _request(db, maker, membership, 40)
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE adjustment_request SET points = 400 WHERE id = %(id)s", {"id": done.id}
            )
        found = [v.check for v in await verify_ledger(db)]
        assert found == ["adjustments_posted_as_requested"]
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE adjustment_request SET points = 40 WHERE id = %(id)s", {"id": done.id}
            )
        assert await verify_ledger(db) == []


async def test_jobs_run_adjustments(db: Database) -> None:
    from tests.test_cli import _alliance

    program, membership = await _setup(db)
    pending = await _request(db, staff(program.merchant_id, "a"), membership, 300)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE adjustment_request SET expires_at = now() - interval '1 second'"
            " WHERE id = %(id)s",
            {"id": pending.id},
        )
    result = await _alliance(db, "jobs", "run", "adjustments")
    assert result.returncode == 0, result.stderr
    assert "expired 1 adjustment requests" in result.stdout
