"""Concurrent reads of one statement share a round trip, and each gets what it would
have got alone (alliance/db/shared_reads.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance.auth.models import Role
from alliance.db import shared_reads
from alliance.db.engine import Database
from alliance.db.shared_reads import array_literal, as_text, shape_of
from alliance.members.queries import (
    HistoryFilter,
    history_pages_by_membership,
    memberships_by_id,
)
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)

DESCENDING = (
    "SELECT g FROM generate_series(1, %(n)s::INT) AS g ORDER BY g DESC LIMIT %(limit)s::INT"
)


class TestShape:
    def test_every_placeholder_becomes_a_column_of_the_key(self) -> None:
        shape = shape_of("SELECT 1 WHERE %(a)s::BIGINT = %(b)s::TEXT OR %(a)s::BIGINT = 0")
        assert shape is not None
        assert shape.names == ("a", "b")
        assert "%(a)s" not in shape.sql
        assert "%(p0)s::TEXT[]" in shape.sql

    @pytest.mark.parametrize(
        "sql", ["SELECT 1", "SELECT %(a)s", "SELECT %(a)s::INT + %(b)s", "SELECT 100 %% 7"]
    )
    def test_statements_that_read_alone(self, sql: str) -> None:
        assert shape_of(sql) is None


class TestTextForms:
    @pytest.mark.parametrize(
        "value",
        [{"a": 1}, [1, "2"], [True], 1.5, datetime(2026, 1, 1), b"x", Role.MEMBER],
    )
    def test_what_has_no_text_form(self, value: Any) -> None:
        with pytest.raises(TypeError):
            as_text(value)

    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.one_of(
            st.tuples(st.integers(-(2**63), 2**63 - 1), st.just("BIGINT")),
            st.tuples(st.booleans(), st.just("BOOLEAN")),
            st.tuples(
                st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")),
                st.just("TEXT"),
            ),
            st.tuples(
                st.decimals(
                    allow_nan=False,
                    allow_infinity=False,
                    places=4,
                    max_value=10**12,
                    min_value=-(10**12),
                ),
                st.just("NUMERIC"),
            ),
            st.tuples(
                st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
                st.just("TIMESTAMPTZ"),
            ),
            st.tuples(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5), st.just("BIGINT[]")),
            st.tuples(st.none(), st.just("BIGINT")),
        )
    )
    async def test_postgresql_reads_the_text_as_the_value(
        self, db: Database, case: tuple[Any, str]
    ) -> None:
        value, cast = case
        rows = await db.fetch_all(
            f"SELECT %(value)s::{cast} IS NOT DISTINCT FROM %(text)s::TEXT::{cast}",
            {"value": value, "text": as_text(value)},
        )
        assert rows == [(True,)]

    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.lists(
            st.one_of(
                st.none(),
                st.sampled_from(
                    ["", "NULL", "null", " a ", '"', "\\", '\\"', "{", "}", ",", "{1,2}"]
                ),
                st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")),
            ),
            max_size=8,
        )
    )
    async def test_an_array_literal_reads_as_its_elements(
        self, db: Database, values: list[str | None]
    ) -> None:
        rows = await db.fetch_all(
            "SELECT element, n FROM unnest(%(a)s::TEXT[]) WITH ORDINALITY AS k(element, n)"
            " ORDER BY n",
            {"a": array_literal(values)},
        )
        assert [element for element, _ in rows] == values


async def test_shared_reads_use_generic_plans_and_other_reads_do_not(db: Database) -> None:
    """A shared statement's plan does not depend on its keys: PostgreSQL keeps the generic
    one rather than planning batches anew (engine.py)."""
    setting = "SELECT current_setting(%(name)s::TEXT)"
    shared = await _together(db, [db.read(setting, {"name": "plan_cache_mode"}) for _ in range(3)])
    assert shared == [[("force_generic_plan",)]] * 3
    assert await db.fetch_all(setting, {"name": "plan_cache_mode"}) == [("auto",)]


async def _together(db: Database, reads: list[Any]) -> list[Any]:
    return await asyncio.gather(*reads, return_exceptions=True)


class TestSharing:
    async def test_each_member_reads_her_own_membership_in_one_statement(
        self, db: Database
    ) -> None:
        program = await make_program(db)
        memberships = [await make_membership(db, program) for _ in range(12)]
        for points, membership in enumerate(memberships, start=1):
            await give_points(db, membership, program, points * 10)
        actors = [member_actor(m, program.merchant_id) for m in memberships]
        # Each asks for her own membership and her neighbour's: the rule hides the latter.
        asked = [[m.id, memberships[(i + 1) % 12].id] for i, m in enumerate(memberships)]
        alone = [await memberships_by_id(db, a, ids) for a, ids in zip(actors, asked, strict=True)]
        with db.count_statements() as counter:
            shared = await _together(
                db, [memberships_by_id(db, a, ids) for a, ids in zip(actors, asked, strict=True)]
            )
        assert counter.count == 1, counter.statements
        assert shared == alone
        for membership, found in zip(memberships, shared, strict=True):
            assert list(found) == [membership.id]
            assert found[membership.id].balance == 10 * (memberships.index(membership) + 1)

    async def test_pages_of_history_are_shared_in_order_with_their_cursors(
        self, db: Database
    ) -> None:
        """Connections' pages (ordered, limited, past a cursor, filtered) read together
        come out as each read alone: the loaders' statements all take part."""
        program = await make_program(db)
        memberships = [await make_membership(db, program) for _ in range(6)]
        for n, membership in enumerate(memberships):
            for _ in range(n + 1):
                await give_points(db, membership, program, 5)
        since = datetime.now(UTC) - timedelta(hours=1)
        asks = [
            (member_actor(m, program.merchant_id), m.id, first, after, HistoryFilter(since=since))
            for m in memberships
            for first, after in ((2, None), (3, 2**62))
        ]

        def page(ask: tuple[Any, ...]) -> Any:
            actor, membership_id, first, after, filters = ask
            return history_pages_by_membership(
                db, actor, [membership_id], first=first, after=after, filters=filters
            )

        alone = [await page(ask) for ask in asks]
        with db.count_statements() as counter:
            shared = await _together(db, [page(ask) for ask in asks])
        # One statement per variant (without a cursor, and past one), each shared.
        assert counter.count == 2, counter.statements
        assert all(sql.startswith("SELECT shared_read_key.n") for sql in counter.statements)
        assert shared == alone
        assert [len(next(iter(p.values())).items) for p in shared] == [
            min(first, n + 1) for n in range(6) for first in (2, 3)
        ]

    async def test_actors_of_different_rules_share_nothing_they_should_not(
        self, db: Database
    ) -> None:
        mine, theirs = await make_program(db), await make_program(db)
        a, b = await make_membership(db, mine), await make_membership(db, theirs)
        ids = [a.id, b.id]
        found = await _together(
            db,
            [
                memberships_by_id(db, merchant_actor(mine.merchant_id), ids),
                memberships_by_id(db, merchant_actor(theirs.merchant_id), ids),
                memberships_by_id(db, OPERATOR, ids),
            ],
        )
        assert [sorted(f) for f in found] == [[a.id], [b.id], sorted(ids)]

    async def test_rows_keep_each_statement_order(self, db: Database) -> None:
        asked = [(n, limit) for n in range(0, 9) for limit in (1, 3, 100)]
        with db.count_statements() as counter:
            found = await _together(
                db, [db.read(DESCENDING, {"n": n, "limit": limit}) for n, limit in asked]
            )
        assert counter.count == 1
        assert found == [[(g,) for g in range(n, 0, -1)][:limit] for n, limit in asked]

    async def test_a_value_that_fails_fails_only_its_own_read(self, db: Database) -> None:
        found = await _together(
            db,
            [
                db.read(DESCENDING, {"n": 2, "limit": 5}),
                db.read(DESCENDING, {"n": "two", "limit": 5}),
                db.read(DESCENDING, {"n": 3, "limit": 1}),
            ],
        )
        assert found[0] == [(2,), (1,)]
        assert isinstance(found[1], psycopg.errors.InvalidTextRepresentation)
        assert found[2] == [(3,)]

    async def test_values_without_a_text_form_read_alone(self, db: Database) -> None:
        sql = "SELECT %(n)s::NUMERIC * 2"
        with db.count_statements() as counter:
            found = await _together(
                db, [db.read(sql, {"n": 1.5}), db.read(sql, {"n": Decimal("2.5")})]
            )
        assert found == [[(Decimal("3.0"),)], [(Decimal("5.0"),)]]
        assert counter.statements == [sql, sql]

    async def test_many_reads_are_sent_in_batches_of_at_most_the_limit(self, db: Database) -> None:
        count = shared_reads.MAX_BATCH * 2 + 5
        with db.count_statements() as counter:
            found = await _together(
                db, [db.read(DESCENDING, {"n": n % 7, "limit": 2}) for n in range(count)]
            )
        assert found == [[(g,) for g in range(n % 7, 0, -1)][:2] for n in range(count)]
        assert counter.count == 3

    @pytest.mark.parametrize(("given_up", "after"), [(0, 0.0), (0, 0.01), (1, 0.0), (1, 0.01)])
    async def test_a_read_given_up_leaves_the_others_their_answers(
        self, db: Database, given_up: int, after: float
    ) -> None:
        """Given up while the batch gathers or while it is on its way: the others are
        still answered."""
        slow = "SELECT pg_sleep(%(s)s::FLOAT8)::TEXT, %(n)s::INT"
        reads = [asyncio.ensure_future(db.read(slow, {"s": 0.05, "n": n})) for n in range(4)]
        await asyncio.sleep(after)
        reads[given_up].cancel()
        found = await _together(db, reads)
        assert isinstance(found[given_up], asyncio.CancelledError)
        others = [n for n in range(4) if n != given_up]
        assert [found[n] for n in others] == [[("", n)] for n in others]

    async def test_reads_of_different_statements_are_not_mixed(self, db: Database) -> None:
        other = "SELECT %(n)s::INT + 1000"
        with db.count_statements() as counter:
            found = await _together(
                db,
                [db.read(DESCENDING, {"n": 2, "limit": 9}), db.read(other, {"n": 2}),
                 db.read(DESCENDING, {"n": 1, "limit": 9}), db.read(other, {"n": 5})],
            )  # fmt: skip
        assert found == [[(2,), (1,)], [(1002,)], [(1,)], [(1005,)]]
        assert counter.count == 2
