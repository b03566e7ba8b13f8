"""Importing opening balances: real ledger transactions, all or nothing, idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Row, select, text, update

from alliance.audit.models import AuditRecord
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, NotFound
from alliance.events.models import OutboxEvent
from alliance.imports import ImportRejected, RowProblem, import_balances, import_members
from alliance.ledger.models import Account, LedgerTransaction, Lot, Posting
from alliance.ledger.service import spend_points
from alliance.members.models import Membership
from alliance.members.queries import MembershipRecord, membership_by_number
from alliance.programs.models import ExpiryPolicy
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_merchant,
    make_program,
    merchant_actor,
)
from tests.graphql.helpers import gid, ok
from tests.imports.helpers import counts, csv_file, problems

SHANGHAI = ZoneInfo("Asia/Shanghai")
HEADER = "member_number,points,earned_at,expires_at\n"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _end_of_day_after(moment: datetime, days: int) -> datetime:
    """`days_after_earn`: valid through the end of the Nth day after the earn day, Shanghai."""
    local = moment.astimezone(SHANGHAI)
    start = datetime(local.year, local.month, local.day, tzinfo=SHANGHAI)
    return start + timedelta(days=days + 1)


async def _members(db: Database, program: ProgramRecord, *numbers: str) -> list[MembershipRecord]:
    return [await make_membership(db, program, member_number=number) for number in numbers]


async def _balance(db: Database, program: ProgramRecord, number: str) -> int:
    found = await membership_by_number(db, OPERATOR, program_id=program.id, member_number=number)
    assert found is not None
    return found.balance


async def _lots(
    db: Database, membership: MembershipRecord
) -> Sequence[Row[int, int, datetime, datetime | None, datetime]]:
    query = (
        select(Lot.amount, Lot.remaining, Lot.available_at, Lot.expires_at, Lot.created_at)
        .join(Account, Account.id == Lot.account_id)
        .where(Account.membership_id == membership.id)
        .order_by(Lot.id)
    )
    async with db.autocommit() as conn:
        return (await conn.execute(query)).all()


class TestImportBalances:
    async def test_each_row_is_an_opening_transaction_with_two_legs_and_a_lot(
        self, db: Database
    ) -> None:
        program = await make_program(
            db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=30, pending_days=7
        )
        ann, bob = await _members(db, program, "A1", "B2")
        actor = merchant_actor(program.merchant_id)
        report = await import_balances(
            db, actor, program_id=program.id, source=csv_file(HEADER + "A1,100,,\nB2,50,,\n")
        )
        assert (report.rows, report.imported, report.skipped, report.points) == (2, 2, 0, 150)

        async with db.autocommit() as conn:
            transactions = (
                await conn.execute(
                    select(
                        LedgerTransaction.id,
                        LedgerTransaction.kind,
                        LedgerTransaction.member_id,
                        LedgerTransaction.client_id,
                        LedgerTransaction.idempotency_scope,
                        LedgerTransaction.idempotency_key,
                        LedgerTransaction.reason,
                        LedgerTransaction.request_hash,
                    ).order_by(LedgerTransaction.idempotency_key)
                )
            ).all()
            issued = await conn.scalar(
                text("SELECT id FROM account WHERE program_id = :p AND kind = 'issued'"),
                {"p": program.id},
            )
            accounts: dict[int, int] = dict(
                (
                    await conn.execute(
                        text("SELECT membership_id, id FROM account WHERE kind = 'member'")
                    )
                ).all()
            )
            postings = (
                await conn.execute(
                    select(
                        Posting.transaction_id,
                        Posting.account_id,
                        Posting.program_id,
                        Posting.member_id,
                        Posting.amount,
                        Posting.balance_after,
                    ).order_by(Posting.id)
                )
            ).all()
        assert [tuple(t[1:7]) for t in transactions] == [
            (
                "opening",
                ann.member_id,
                actor.client_id,
                f"import:{program.id}",
                "opening:A1",
                "opening balance",
            ),
            (
                "opening",
                bob.member_id,
                actor.client_id,
                f"import:{program.id}",
                "opening:B2",
                "opening balance",
            ),
        ]
        assert all(len(t.request_hash) == 32 for t in transactions)
        ann_tx, bob_tx = transactions[0].id, transactions[1].id
        assert sorted(tuple(p) for p in postings) == sorted(
            [
                (ann_tx, accounts[ann.id], program.id, ann.member_id, 100, 100),
                (ann_tx, issued, program.id, ann.member_id, -100, None),
                (bob_tx, accounts[bob.id], program.id, bob.member_id, 50, 50),
                (bob_tx, issued, program.id, bob.member_id, -50, None),
            ]
        )

        [(amount, remaining, available_at, expires_at, created_at)] = await _lots(db, ann)
        assert (amount, remaining) == (100, 100)
        # Spendable at once despite the program's 7 pending days.
        assert available_at == created_at
        assert expires_at == _end_of_day_after(created_at, 30)
        assert await _balance(db, program, "A1") == 100

    async def test_balance_after_counts_points_already_there(self, db: Database) -> None:
        program = await make_program(db)
        [ann] = await _members(db, program, "A1")
        await give_points(db, ann, program, 40)
        await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + "A1,60,,\n")
        )
        assert await _balance(db, program, "A1") == 100
        async with db.autocommit() as conn:
            last = await conn.scalar(
                select(Posting.balance_after)
                .where(Posting.balance_after.is_not(None))
                .order_by(Posting.id.desc())
                .limit(1)
            )
        assert last == 100

    async def test_imported_points_can_be_spent_right_away(self, db: Database) -> None:
        program = await make_program(db, pending_days=14)
        [ann] = await _members(db, program, "A1")
        await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + "A1,500,,\n")
        )
        spent = await spend_points(
            db,
            merchant_actor(program.merchant_id),
            membership_id=ann.id,
            points=450,
            reason="first visit",
            idempotency_key="s1",
        )
        assert spent.balance_after == 50
        assert [(amount, remaining) for amount, remaining, *_ in await _lots(db, ann)] == [
            (500, 50)
        ]

    async def test_history_shows_the_opening_balance(self, db: Database) -> None:
        program = await make_program(db)
        [ann] = await _members(db, program, "A1")
        await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + "A1,75,,\n")
        )
        data = await ok(
            db,
            merchant_actor(program.merchant_id),
            """query($id: ID!) { membership(id: $id) {
                transactions { edges { node { kind reason points balanceAfter } } } } }""",
            {"id": gid("Membership", ann.id)},
        )
        assert data["membership"]["transactions"]["edges"] == [
            {
                "node": {
                    "kind": "OPENING",
                    "reason": "opening balance",
                    "points": 75,
                    "balanceAfter": 75,
                }
            }
        ]

    async def test_audit_record_and_one_event(self, db: Database) -> None:
        program = await make_program(db)
        await _members(db, program, "A1", "B2")
        await import_balances(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file(HEADER + "A1,5,,\nB2,6,,\n", "old.csv"),
        )
        async with db.autocommit() as conn:
            audit = (
                await conn.execute(
                    select(AuditRecord.actor, AuditRecord.target, AuditRecord.after).where(
                        AuditRecord.action == "import.balances"
                    )
                )
            ).one()
            events = (
                await conn.execute(
                    select(OutboxEvent.merchant_id, OutboxEvent.payload).where(
                        OutboxEvent.topic == "balances.imported"
                    )
                )
            ).all()
        summary = {
            "program_id": program.id,
            "source": "old.csv",
            "rows": 2,
            "imported": 2,
            "skipped": 0,
            "points": 11,
            "debt_repaid": 0,
        }
        assert tuple(audit) == (OPERATOR.subject, f"program:{program.id}", summary)
        assert [tuple(event) for event in events] == [(program.merchant_id, summary)]


class TestClawbackDebt:
    async def _owe(
        self, db: Database, program: ProgramRecord, member: MembershipRecord, points: int
    ) -> None:
        """A clawback debt as a refund leaves it (this branch has no refund use case to
        make one): the member's debt, mirrored on the program's clawback account."""
        async with db.autocommit() as conn:
            await conn.execute(
                text(
                    "WITH t AS (INSERT INTO ledger_transaction (kind, member_id, reason)"
                    "           VALUES ('reverse', :member, 'refund') RETURNING id)"
                    " INSERT INTO posting"
                    "        (transaction_id, account_id, program_id, member_id, amount)"
                    " SELECT t.id, a.id, :program, :member,"
                    "        CASE a.kind WHEN 'issued' THEN :points ELSE -:points END"
                    "   FROM t, account a"
                    "  WHERE a.program_id = :program AND a.membership_id IS NULL"
                    "    AND a.kind IN ('issued', 'clawback')"
                ),
                {"member": member.member_id, "program": program.id, "points": points},
            )
            await conn.execute(
                update(Account).where(Account.membership_id == member.id).values(debt=points)
            )

    async def test_debt_is_repaid_first(self, db: Database) -> None:
        program = await make_program(db)
        ann, bob = await _members(db, program, "A1", "B2")
        await give_points(db, ann, program, 10)
        await self._owe(db, program, ann, 30)
        await self._owe(db, program, bob, 500)
        report = await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + "A1,100,,\nB2,100,,\n")
        )
        assert report.points == 200
        async with db.autocommit() as conn:
            debts = dict(
                (
                    await conn.execute(
                        select(Account.membership_id, Account.debt).where(
                            Account.membership_id.in_([ann.id, bob.id])
                        )
                    )
                ).all()
            )
            legs = (
                await conn.execute(
                    text(
                        "SELECT a.kind, p.amount, p.balance_after FROM posting p"
                        " JOIN account a ON a.id = p.account_id"
                        " JOIN ledger_transaction t ON t.id = p.transaction_id"
                        " WHERE t.idempotency_key = 'opening:A1' ORDER BY p.id"
                    )
                )
            ).all()
        assert debts == {ann.id: 0, bob.id: 400}
        assert [tuple(leg) for leg in legs] == [
            ("member", 100, 110),
            ("member", -30, 80),
            ("issued", -100, None),
            ("clawback", 30, None),
        ]
        assert await _balance(db, program, "A1") == 80
        assert await _balance(db, program, "B2") == 0
        assert [(amount, remaining) for amount, remaining, *_ in await _lots(db, ann)] == [
            (10, 10),
            (100, 70),
        ]
        assert [(amount, remaining) for amount, remaining, *_ in await _lots(db, bob)] == [(100, 0)]


class TestExpiry:
    async def test_policy_counts_from_earned_at(self, db: Database) -> None:
        program = await make_program(
            db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=90
        )
        [ann] = await _members(db, program, "A1")
        earned_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
        await import_balances(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file(HEADER + f"A1,10,{_iso(earned_at)},\n"),
        )
        [(_, _, _, expires_at, _)] = await _lots(db, ann)
        assert expires_at == _end_of_day_after(earned_at, 90)

    async def test_explicit_expiry_overrides_the_policy(self, db: Database) -> None:
        program = await make_program(db)  # points never expire
        ann, bob = await _members(db, program, "A1", "B2")
        await import_balances(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file(HEADER + "A1,10,,2031-06-30T23:59:59+08:00\nB2,10,,\n"),
        )
        [(_, _, _, ann_expiry, _)] = await _lots(db, ann)
        [(_, _, _, bob_expiry, _)] = await _lots(db, bob)
        assert ann_expiry == datetime(2031, 6, 30, 15, 59, 59, tzinfo=UTC)
        assert bob_expiry is None


class TestTimestamps:
    @pytest.mark.parametrize(
        ("written", "instant"),
        [
            ("2031-01-05T10:00:00+08:00", datetime(2031, 1, 5, 2, tzinfo=UTC)),
            ("2031-01-05 10:00Z", datetime(2031, 1, 5, 10, tzinfo=UTC)),
            ("2031-01-05T10:00:00.5-0500", datetime(2031, 1, 5, 15, 0, 0, 500000, tzinfo=UTC)),
            ("2031-01-05T10:00+08", datetime(2031, 1, 5, 2, tzinfo=UTC)),
        ],
    )
    async def test_iso_8601_with_a_zone_is_read(
        self, db: Database, written: str, instant: datetime
    ) -> None:
        program = await make_program(db)
        [ann] = await _members(db, program, "A1")
        await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + f"A1,1,,{written}\n")
        )
        [(_, _, _, expires_at, _)] = await _lots(db, ann)
        assert expires_at == instant

    @pytest.mark.parametrize(
        "written",
        [
            "2031-01-05T10:00:00",
            "2031-01-05",
            "infinity",
            "05/01/2031 10:00+08",
            "2031-01-05T10:00:00 Asia/Shanghai",
            "2031-01-05T25:00Z",
            "2031-02-30T10:00Z",
        ],
    )
    async def test_anything_else_is_refused(self, db: Database, written: str) -> None:
        program = await make_program(db)
        await _members(db, program, "A1")
        with pytest.raises(ImportRejected) as rejected:
            await import_balances(
                db,
                OPERATOR,
                program_id=program.id,
                source=csv_file(HEADER + f"A1,1,,{written}\n"),
            )
        assert problems(rejected.value) == [(2, RowProblem.INVALID_EXPIRES_AT)]


class TestRerun:
    async def test_the_same_file_changes_nothing(self, db: Database) -> None:
        program = await make_program(db)
        await _members(db, program, "A1", "B2", "C3")
        earned = "2026-01-05T08:00:00+08:00"
        first = await import_balances(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file(HEADER + f"A1,10,{earned},\nB2,20,,\n"),
        )
        assert first.imported == 2
        before = await counts(db)
        # Same figures, written differently (the same instant in UTC, a leading zero),
        # and one new row.
        again = await import_balances(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file(HEADER + "A1,010,2026-01-05T00:00Z,\nB2,20,,\nC3,5,,\n"),
        )
        assert (again.rows, again.imported, again.skipped, again.points) == (3, 1, 2, 5)
        after = await counts(db)
        assert after["ledger_transaction"] == before["ledger_transaction"] + 1
        assert after["points"] == before["points"] + 5

    async def test_other_figures_for_an_imported_member_are_refused(self, db: Database) -> None:
        program = await make_program(db)
        await _members(db, program, "A1", "B2", "C3")
        await import_balances(
            db, OPERATOR, program_id=program.id, source=csv_file(HEADER + "A1,10,,\nB2,20,,\n")
        )
        before = await counts(db)
        with pytest.raises(ImportRejected) as rejected:
            await import_balances(
                db,
                OPERATOR,
                program_id=program.id,
                source=csv_file(HEADER + "C3,5,,\nA1,10,,\nB2,21,,\n"),
            )
        assert problems(rejected.value) == [(4, RowProblem.ALREADY_IMPORTED)]
        assert rejected.value.errors[0].message == (
            "member number B2 was already imported with other figures"
        )
        assert await counts(db) == before


class TestBadRows:
    async def test_every_bad_row_is_reported_with_its_line_and_nothing_written(
        self, db: Database
    ) -> None:
        program = await make_program(
            db, expiry_policy=ExpiryPolicy.DAYS_AFTER_EARN, expiry_value=30
        )
        numbers = [f"M{n}" for n in range(1, 19)]
        await _members(db, program, *numbers, "CLOSED")
        async with db.autocommit() as conn:
            await conn.execute(
                update(Membership)
                .where(Membership.member_number == "CLOSED")
                .values(status="closed")
            )
        future = _iso(datetime.now(UTC) + timedelta(days=3))
        past = _iso(datetime.now(UTC) - timedelta(days=3))
        long_ago = _iso(datetime.now(UTC) - timedelta(days=400))
        content = (
            HEADER
            + "\n".join(
                [
                    "M1,10,,",  # 2: fine
                    ",10,,",  # 3
                    "M1,10,,",  # 4: M1 again
                    "NOBODY,10,,",  # 5
                    "CLOSED,10,,",  # 6
                    "M5,,,",  # 7
                    "M6,0,,",  # 8
                    "M7,-5,,",  # 9
                    "M8,1.5,,",  # 10
                    "M9,1000000001,,",  # 11
                    "M10,10,2026-01-05T10:00:00,",  # 12: no zone
                    "M11,10,today,",  # 13
                    "M12,10,2026-13-01T00:00Z,",  # 14
                    f"M13,10,{future},",  # 15
                    "M14,10,,2031-01-01",  # 16: a date alone
                    f"M15,10,,{past}",  # 17
                    f"M16,10,{long_ago},",  # 18: 30 days after 400 days ago
                    f"M17,10,{long_ago},{future}",  # 19: fine, the expiry is explicit
                    "M18,10",  # 20: too few fields
                ]
            )
            + "\n"
        )
        before = await counts(db)
        with pytest.raises(ImportRejected) as rejected:
            await import_balances(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert problems(rejected.value) == [
            (3, RowProblem.MISSING_MEMBER_NUMBER),
            (4, RowProblem.DUPLICATE_MEMBER_NUMBER),
            (5, RowProblem.UNKNOWN_MEMBER_NUMBER),
            (6, RowProblem.MEMBERSHIP_CLOSED),
            (7, RowProblem.MISSING_POINTS),
            (8, RowProblem.INVALID_POINTS),
            (9, RowProblem.INVALID_POINTS),
            (10, RowProblem.INVALID_POINTS),
            (11, RowProblem.INVALID_POINTS),
            (12, RowProblem.INVALID_EARNED_AT),
            (13, RowProblem.INVALID_EARNED_AT),
            (14, RowProblem.INVALID_EARNED_AT),
            (15, RowProblem.EARNED_IN_FUTURE),
            (16, RowProblem.INVALID_EXPIRES_AT),
            (17, RowProblem.EXPIRES_IN_PAST),
            (18, RowProblem.EXPIRED_BY_POLICY),
            (20, RowProblem.MALFORMED),
        ]
        messages = {error.line: error.message for error in rejected.value.errors}
        assert messages[4] == "member number M1 is also on line 2"
        assert messages[10] == "points must be a whole number from 1 to 1000000000, not '1.5'"
        assert "Asia/Shanghai" in messages[18]
        assert await counts(db) == before

    async def test_one_bad_row_in_a_thousand_writes_nothing(self, db: Database) -> None:
        program = await make_program(db)
        numbers = [f"M{n:04d}" for n in range(1, 1001)]
        await import_members(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file("member_number\n" + "\n".join(numbers) + "\n"),
        )
        points = ["7"] * 1000
        points[499] = "7x"  # line 501
        content = HEADER + "".join(f"{n},{p},,\n" for n, p in zip(numbers, points, strict=True))
        before = await counts(db)
        with pytest.raises(ImportRejected) as rejected:
            await import_balances(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert problems(rejected.value) == [(501, RowProblem.INVALID_POINTS)]
        assert await counts(db) == before
        points[499] = "7"
        fixed = HEADER + "".join(f"{n},{p},,\n" for n, p in zip(numbers, points, strict=True))
        report = await import_balances(db, OPERATOR, program_id=program.id, source=csv_file(fixed))
        assert (report.imported, report.points) == (1000, 7000)


class TestAuthorization:
    async def test_merchant_of_another_program_is_refused(self, db: Database) -> None:
        program = await make_program(db)
        await _members(db, program, "A1")
        stranger = await make_merchant(db)
        await make_program(db, stranger)
        before = await counts(db)
        with pytest.raises(NotFound):
            await import_balances(
                db,
                merchant_actor(stranger),
                program_id=program.id,
                source=csv_file(HEADER + "A1,10,,\n"),
            )
        assert await counts(db) == before

    @pytest.mark.parametrize("role", [Role.FINANCE, Role.AUDITOR, Role.MEMBER])
    async def test_other_roles_are_refused(self, db: Database, role: Role) -> None:
        program = await make_program(db)
        await _members(db, program, "A1")
        actor = Actor(role, "client:x", "x", merchant_id=program.merchant_id)
        with pytest.raises(Forbidden):
            await import_balances(
                db, actor, program_id=program.id, source=csv_file(HEADER + "A1,10,,\n")
            )
