"""Importing members: the same rows as enrolment, all or nothing, idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text, update

from alliance.audit.models import AuditRecord
from alliance.auth.actor import Actor
from alliance.auth.models import Role
from alliance.db.engine import Database
from alliance.errors import Forbidden, Inactive, NotFound
from alliance.events.models import OutboxEvent
from alliance.imports import ImportRejected, RowProblem, import_members
from alliance.members.models import Member
from alliance.members.queries import membership_by_number
from alliance.programs.models import Program
from tests.factories import (
    OPERATOR,
    make_membership,
    make_merchant,
    make_program,
    merchant_actor,
)
from tests.imports.helpers import counts, csv_file, problems


class TestImportMembers:
    async def test_creates_members_memberships_and_empty_accounts(self, db: Database) -> None:
        program = await make_program(db)
        report = await import_members(
            db,
            merchant_actor(program.merchant_id),
            program_id=program.id,
            source=csv_file("member_number,display_name\nW-1,李娜\nW-2,\n", "old.csv"),
        )
        assert (report.rows, report.imported, report.skipped) == (2, 2, 0)
        assert report.source == "old.csv"
        first = await membership_by_number(db, OPERATOR, program_id=program.id, member_number="W-1")
        second = await membership_by_number(
            db, OPERATOR, program_id=program.id, member_number="W-2"
        )
        assert first is not None
        assert second is not None
        assert (first.status, first.balance, first.held) == ("active", 0, 0)
        assert first.member_id != second.member_id
        async with db.autocommit() as conn:
            names = dict((await conn.execute(select(Member.id, Member.display_name))).all())
            accounts = (
                await conn.execute(
                    text(
                        "SELECT membership_id, member_id, program_id, kind, balance, held"
                        " FROM account WHERE kind = 'member' ORDER BY membership_id"
                    )
                )
            ).all()
        assert names == {first.member_id: "李娜", second.member_id: None}
        assert [tuple(a) for a in accounts] == [
            (first.id, first.member_id, program.id, "member", 0, 0),
            (second.id, second.member_id, program.id, "member", 0, 0),
        ]

    async def test_enrolment_still_works_after_an_import(self, db: Database) -> None:
        """The import draws ids from the same sequences as enrolment."""
        program = await make_program(db)
        await import_members(
            db, OPERATOR, program_id=program.id, source=csv_file("member_number\nA1\nA2\n")
        )
        enrolled = await make_membership(db, program, member_number="A3")
        assert enrolled.member_number == "A3"

    async def test_rerun_skips_what_is_enrolled(self, db: Database) -> None:
        program = await make_program(db)
        await make_membership(db, program, member_number="A1", display_name="Ann")
        content = "member_number,display_name\nA1,Ann\nA2,Bob\nA3,\n"
        first = await import_members(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert (first.imported, first.skipped) == (2, 1)
        before = await counts(db)
        again = await import_members(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert (again.rows, again.imported, again.skipped) == (3, 0, 3)
        after = await counts(db)
        # The re-run leaves its audit record, and nothing else.
        assert after == before | {"audit_record": before["audit_record"] + 1}

    async def test_audit_record_and_one_event(self, db: Database) -> None:
        program = await make_program(db)
        await import_members(
            db,
            OPERATOR,
            program_id=program.id,
            source=csv_file("member_number\nA1\nA2\nA3\n", "crm.csv"),
        )
        async with db.autocommit() as conn:
            audit = (
                await conn.execute(
                    select(AuditRecord.actor, AuditRecord.target, AuditRecord.after).where(
                        AuditRecord.action == "import.members"
                    )
                )
            ).one()
            event = (
                await conn.execute(
                    select(OutboxEvent.merchant_id, OutboxEvent.payload).where(
                        OutboxEvent.topic == "members.imported"
                    )
                )
            ).one()
        summary = {
            "program_id": program.id,
            "source": "crm.csv",
            "rows": 3,
            "imported": 3,
            "skipped": 0,
        }
        assert (audit.actor, audit.target, audit.after) == (
            OPERATOR.subject,
            f"program:{program.id}",
            summary,
        )
        assert (event.merchant_id, event.payload) == (program.merchant_id, summary)


class TestBadRows:
    async def test_every_bad_row_is_reported_with_its_line_and_nothing_written(
        self, db: Database
    ) -> None:
        program = await make_program(db)
        await make_membership(db, program, member_number="TAKEN", display_name="Ann")
        before = await counts(db)
        content = (
            "member_number,display_name\n"
            "GOOD-1,Fine\n"  # 2
            ",No number\n"  # 3
            "DUP,First\n"  # 4
            "DUP,Second\n"  # 5
            f"{'X' * 65},Too long\n"  # 6
            "BELL\a,Control character\n"  # 7
            f"N8,{'y' * 201}\n"  # 8
            "N9,Zero\u200bwidth\n"  # 9
            "TAKEN,Bob\n"  # 10
            "TAKEN2\n"  # 11: too few fields
        )
        with pytest.raises(ImportRejected) as rejected:
            await import_members(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert problems(rejected.value) == [
            (3, RowProblem.MISSING_MEMBER_NUMBER),
            (5, RowProblem.DUPLICATE_MEMBER_NUMBER),
            (6, RowProblem.INVALID_MEMBER_NUMBER),
            (7, RowProblem.INVALID_MEMBER_NUMBER),
            (8, RowProblem.INVALID_DISPLAY_NAME),
            (9, RowProblem.INVALID_DISPLAY_NAME),
            (10, RowProblem.MEMBER_NUMBER_TAKEN),
            (11, RowProblem.MALFORMED),
        ]
        assert rejected.value.error_count == 8
        assert "also on line 4" in rejected.value.errors[1].message
        assert await counts(db) == before

    async def test_one_bad_row_in_a_thousand_writes_nothing(self, db: Database) -> None:
        program = await make_program(db)
        numbers = [f"M{n:04d}" for n in range(1, 1001)]
        numbers[736] = ""  # line 738 (the header is line 1)
        content = "member_number,display_name\n" + "".join(f"{n},x\n" for n in numbers)
        before = await counts(db)
        with pytest.raises(ImportRejected) as rejected:
            await import_members(db, OPERATOR, program_id=program.id, source=csv_file(content))
        assert problems(rejected.value) == [(738, RowProblem.MISSING_MEMBER_NUMBER)]
        assert await counts(db) == before

    async def test_errors_beyond_the_limit_are_counted(self, db: Database) -> None:
        program = await make_program(db)
        content = "member_number,display_name\n" + ",x\n" * 30
        with pytest.raises(ImportRejected) as rejected:
            await import_members(
                db, OPERATOR, program_id=program.id, source=csv_file(content), max_errors=5
            )
        assert [error.line for error in rejected.value.errors] == [2, 3, 4, 5, 6]
        assert rejected.value.error_count == 30


class TestAuthorization:
    async def test_merchant_of_another_program_is_refused(self, db: Database) -> None:
        program = await make_program(db)
        stranger = await make_merchant(db)
        with pytest.raises(NotFound):
            await import_members(
                db,
                merchant_actor(stranger),
                program_id=program.id,
                source=csv_file("member_number\nA1\n"),
            )
        assert (await counts(db))["membership"] == 0

    @pytest.mark.parametrize("role", [Role.FINANCE, Role.AUDITOR, Role.MEMBER])
    async def test_other_roles_are_refused(self, db: Database, role: Role) -> None:
        program = await make_program(db)
        actor = Actor(role, "client:x", "x", merchant_id=program.merchant_id)
        with pytest.raises(Forbidden):
            await import_members(
                db, actor, program_id=program.id, source=csv_file("member_number\nA1\n")
            )

    async def test_closed_program_is_refused(self, db: Database) -> None:
        program = await make_program(db)
        async with db.autocommit() as conn:
            await conn.execute(
                update(Program).where(Program.id == program.id).values(status="closed")
            )
        with pytest.raises(Inactive):
            await import_members(
                db, OPERATOR, program_id=program.id, source=csv_file("member_number\nA1\n")
            )

    async def test_unknown_program(self, db: Database) -> None:
        with pytest.raises(NotFound):
            await import_members(
                db, OPERATOR, program_id=999_999, source=csv_file("member_number\nA1\n")
            )
