"""Queries through GraphQL: visibility per role, pagination, and statement counts."""

from __future__ import annotations

from typing import Any

from alliance.db.engine import Database
from alliance.programs.queries import ProgramRecord
from tests.factories import (
    ALLIANCE_FINANCE,
    AUDITOR,
    OPERATOR,
    finance_actor,
    give_points,
    make_membership,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.graphql.helpers import error_codes, gid, ok, run

NESTED = """
query($programs: Int!, $memberships: Int!) {
  programs(first: $programs) {
    edges { node {
      name outstandingPoints merchant { name }
      memberships(first: $memberships) { edges { node {
        memberNumber
        member { displayName }
        program { code }
        balance { points held }
        transactions(first: 3) { edges { node { points balanceAfter kind } } }
      } } }
    } }
  }
}"""


async def _populate(db: Database, programs: int, members: int) -> list[ProgramRecord]:
    made = []
    merchant = await make_merchant(db)
    for _ in range(programs):
        program = await make_program(db, merchant)
        made.append(program)
        for _ in range(members):
            membership = await make_membership(db, program)
            for points in (10, 20, 30, 40):
                await give_points(db, membership, program, points)
    return made


class TestStatementCount:
    async def test_nested_query_is_constant_in_rows(self, db: Database) -> None:
        await _populate(db, programs=2, members=2)
        with db.count_statements() as small:
            data = await ok(db, OPERATOR, NESTED, {"programs": 10, "memberships": 10})
        assert len(data["programs"]["edges"]) == 2
        await _populate(db, programs=4, members=5)
        with db.count_statements() as large:
            data = await ok(db, OPERATOR, NESTED, {"programs": 10, "memberships": 10})
        edges = data["programs"]["edges"]
        assert len(edges) == 6
        assert len(edges[-1]["node"]["memberships"]["edges"]) == 5
        assert (
            len(edges[-1]["node"]["memberships"]["edges"][0]["node"]["transactions"]["edges"]) == 3
        )
        # programs, merchants, outstanding points, memberships, members, programs by id,
        # transactions: one statement each, whatever the number of rows.
        assert small.count == large.count == 7, large.statements

    async def test_node_query_batches(self, db: Database) -> None:
        programs = await _populate(db, programs=3, members=1)
        ids = [gid("Program", program.id) for program in programs]
        with db.count_statements() as counter:
            data = await ok(
                db,
                OPERATOR,
                """query($ids: [ID!]!) { nodes(ids: $ids) {
                ... on Program { code merchant { code } } } }""",
                {"ids": ids},
            )
        assert [node["code"] for node in data["nodes"]] == [p.code for p in programs]
        assert counter.count == 2


class TestVisibility:
    async def test_merchant_sees_only_own_memberships(self, db: Database) -> None:
        mine = await make_program(db)
        theirs = await make_program(db)
        own = await make_membership(db, mine)
        foreign = await make_membership(db, theirs)
        actor = merchant_actor(mine.merchant_id)
        for membership, visible in ((own, True), (foreign, False)):
            data = await ok(
                db,
                actor,
                "query($id: ID!) { membership(id: $id) { memberNumber } }",
                {"id": gid("Membership", membership.id)},
            )
            assert (data["membership"] is not None) is visible
            data = await ok(
                db,
                actor,
                "query($id: ID!) { node(id: $id) { id } }",
                {"id": gid("Membership", membership.id)},
            )
            assert (data["node"] is not None) is visible
        data = await ok(
            db,
            actor,
            """query($id: ID!) { node(id: $id) { ... on Program {
            memberships { edges { node { memberNumber } } } } } }""",
            {"id": gid("Program", theirs.id)},
        )
        assert data["node"]["memberships"]["edges"] == []

    async def test_merchant_sees_member_only_through_own_memberships(self, db: Database) -> None:
        merchant = await make_merchant(db)
        mine = await make_program(db, merchant)
        other_program = await make_program(db, merchant)
        theirs = await make_program(db)
        membership = await make_membership(db, mine)
        data = await ok(
            db,
            merchant_actor(merchant),
            """query($id: ID!) { member(id: $id) {
            memberships { edges { node { program { id } } } } } }""",
            {"id": gid("Member", membership.member_id)},
        )
        assert len(data["member"]["memberships"]["edges"]) == 1
        stranger = await make_membership(db, theirs)
        data = await ok(
            db,
            merchant_actor(merchant),
            "query($id: ID!) { member(id: $id) { id } }",
            {"id": gid("Member", stranger.member_id)},
        )
        assert data["member"] is None
        assert other_program

    async def test_member_sees_only_self(self, db: Database) -> None:
        program = await make_program(db)
        me = await make_membership(db, program)
        other = await make_membership(db, program)
        await give_points(db, me, program, 70)
        actor = member_actor(me, program.merchant_id)
        data = await ok(
            db,
            actor,
            """{ viewer { role membership { memberNumber balance { points } }
            member { balances { edges { node { points program { id } } } } } } }""",
        )
        assert data["viewer"]["role"] == "MEMBER"
        assert data["viewer"]["membership"]["balance"]["points"] == 70
        assert data["viewer"]["member"]["balances"]["edges"][0]["node"]["points"] == 70
        for type_name, pk in (("Membership", other.id), ("Member", other.member_id)):
            data = await ok(
                db, actor, "query($id: ID!) { node(id: $id) { id } }", {"id": gid(type_name, pk)}
            )
            assert data["node"] is None

    async def test_finance_reads_liability_not_members(self, db: Database) -> None:
        merchant = await make_merchant(db)
        program = await make_program(db, merchant)
        other = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 500)
        query = """query($id: ID!) { node(id: $id) { ... on Program { outstandingPoints
            memberships { edges { node { id } } } } } }"""
        bound = await ok(db, finance_actor(merchant), query, {"id": gid("Program", program.id)})
        assert bound["node"] == {"outstandingPoints": 500, "memberships": {"edges": []}}
        foreign = await ok(db, finance_actor(merchant), query, {"id": gid("Program", other.id)})
        assert foreign["node"]["outstandingPoints"] is None
        wide = await ok(db, ALLIANCE_FINANCE, query, {"id": gid("Program", other.id)})
        assert wide["node"]["outstandingPoints"] == 0

    async def test_member_may_not_read_liability(self, db: Database) -> None:
        program = await make_program(db)
        me = await make_membership(db, program)
        result = await run(
            db,
            member_actor(me, program.merchant_id),
            "query($id: ID!) { node(id: $id) { ... on Program { outstandingPoints } } }",
            {"id": gid("Program", program.id)},
        )
        assert error_codes(result) == ["FORBIDDEN"]

    async def test_auditor_reads_everything(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 5)
        data = await ok(
            db,
            AUDITOR,
            """query($id: ID!) { membership(id: $id) {
            transactions { edges { node { points } } } } }""",
            {"id": gid("Membership", membership.id)},
        )
        assert data["membership"]["transactions"]["edges"] == [{"node": {"points": 5}}]


class TestPagination:
    async def test_transactions_newest_first_with_cursor(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        for points in range(1, 8):
            await give_points(db, membership, program, points)
        query = """query($id: ID!, $after: String) { membership(id: $id) {
            transactions(first: 3, after: $after) {
              edges { cursor node { points } } pageInfo { hasNextPage endCursor } } } }"""
        seen: list[int] = []
        after = None
        while True:
            data = await ok(
                db, OPERATOR, query, {"id": gid("Membership", membership.id), "after": after}
            )
            page = data["membership"]["transactions"]
            seen += [edge["node"]["points"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == [7, 6, 5, 4, 3, 2, 1]

    async def test_member_history_filters_by_program(self, db: Database) -> None:
        merchant = await make_merchant(db)
        a = await make_program(db, merchant)
        b = await make_program(db, merchant)
        in_a = await make_membership(db, a)
        data = await ok(
            db,
            merchant_actor(merchant),
            """mutation($input: EnrollMemberInput!) {
            enrollMember(input: $input) { membership { id } } }""",
            {
                "input": {
                    "programId": gid("Program", b.id),
                    "memberNumber": "B1",
                    "memberId": gid("Member", in_a.member_id),
                }
            },
        )
        in_b_id = data["enrollMember"]["membership"]["id"]
        assert in_b_id
        await give_points(db, in_a, a, 11)
        query = """query($id: ID!, $program: ID) { member(id: $id) {
            transactions(programId: $program) { edges { node { points program { id } } } } } }"""
        everything = await ok(db, OPERATOR, query, {"id": gid("Member", in_a.member_id)})
        assert len(everything["member"]["transactions"]["edges"]) == 1
        only_b = await ok(
            db,
            OPERATOR,
            query,
            {"id": gid("Member", in_a.member_id), "program": gid("Program", b.id)},
        )
        assert only_b["member"]["transactions"]["edges"] == []

    async def test_first_over_100_is_refused(self, db: Database) -> None:
        result = await run(db, OPERATOR, "{ merchants(first: 101) { edges { cursor } } }")
        assert error_codes(result) == ["INVALID_INPUT"]

    async def test_forged_cursor_is_refused(self, db: Database) -> None:
        result = await run(
            db, OPERATOR, '{ merchants(after: "not-a-cursor") { edges { cursor } } }'
        )
        assert error_codes(result) == ["INVALID_INPUT"]

    async def test_merchants_pages(self, db: Database) -> None:
        for _ in range(5):
            await make_merchant(db)
        data: dict[str, Any] = await ok(
            db,
            OPERATOR,
            """{ merchants(first: 2) {
            edges { node { code } } pageInfo { hasNextPage hasPreviousPage endCursor } } }""",
        )
        assert len(data["merchants"]["edges"]) == 2
        assert data["merchants"]["pageInfo"]["hasNextPage"] is True
        assert data["merchants"]["pageInfo"]["hasPreviousPage"] is False


class TestValidity:
    async def test_points_expiring_and_lots(self, db: Database) -> None:
        from datetime import UTC, datetime, timedelta

        from sqlalchemy import update

        from alliance.ledger.models import Lot

        program = await make_program(db)
        membership = await make_membership(db, program)
        for points in (10, 20, 30):
            await give_points(db, membership, program, points)
        async with db.autocommit() as conn:
            soon = datetime.now(UTC) + timedelta(days=5)
            await conn.execute(update(Lot).where(Lot.amount == 20).values(expires_at=soon))
        data = await ok(db, member_actor(membership, program.merchant_id), """query($id: ID!) {
            membership(id: $id) { week: pointsExpiring(withinDays: 7)
              day: pointsExpiring(withinDays: 1)
              lots { edges { node { amount remaining expiresAt } } } } }""",
                        {"id": gid("Membership", membership.id)})  # fmt: skip
        assert data["membership"]["week"] == 20
        assert data["membership"]["day"] == 0
        lots = [edge["node"] for edge in data["membership"]["lots"]["edges"]]
        assert [lot["amount"] for lot in lots] == [10, 20, 30]
        assert [lot["expiresAt"] is None for lot in lots] == [True, False, True]

    async def test_window_is_bounded(self, db: Database) -> None:
        membership = await make_membership(db)
        result = await run(
            db,
            OPERATOR,
            """query($id: ID!) { membership(id: $id) {
            pointsExpiring(withinDays: -1) } }""",
            {"id": gid("Membership", membership.id)},
        )
        assert error_codes(result) == ["INVALID_INPUT"]
