"""Schemathesis (GraphQL mode) against the live schema, through the real HTTP app, with a
real token for each role: every generated query and mutation is answered without a 500
and without an unmasked internal error. Generated ids point at real objects half the time.

Short form in CI (a few cases per operation and role); ALLIANCE_SLOW=1 for many more.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from decimal import Decimal
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning
from hypothesis_graphql import nodes

from alliance.auth.clients import create_client, get_client
from alliance.auth.models import Role
from alliance.auth.oauth import member_actor
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from alliance.rules.models import RuleKind
from alliance.rules.terms import TermsInput
from gateway import create_app
from tests.factories import backdated_rule, give_points, make_membership, make_program
from tests.graphql.helpers import gid

CASES = 40 if os.environ.get("ALLIANCE_SLOW") == "1" else 4
SCHEMA_FILE = "schema/schema.graphql"

schemathesis.graphql.scalar(
    "Decimal",
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**13), max_value=10**13)
    .map(lambda d: nodes.String(str(d))),
)  # fmt: skip
schemathesis.graphql.scalar("BigInt", st.integers(-(2**63), 2**63 - 1).map(nodes.Int))
schemathesis.graphql.scalar(
    "DateTime",
    st.one_of(
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.text(max_size=30),
    ).map(nodes.String),
)  # fmt: skip


def _operations() -> list[Any]:
    schema = schemathesis.graphql.from_path(SCHEMA_FILE)
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # a valid SDL loads every operation
        operations.append(operation)
    return operations


async def _tokens(db: Database) -> tuple[dict[str, str], list[str]]:
    program = await make_program(db)
    await backdated_rule(db, program, "base", RuleKind.PURCHASE,
                         TermsInput(points_per_unit=Decimal(1)))  # fmt: skip
    membership = await make_membership(db, program)
    await give_points(db, membership, program, 100)
    tokens = {}
    for role, merchant_id in ((Role.OPERATOR, None), (Role.MERCHANT, program.merchant_id)):
        client_id, _ = await create_client(
            db, name=role.value, role=role, merchant_id=merchant_id, client_id=f"fuzz-{role}"
        )
        record = await get_client(db, client_id)
        assert record is not None
        tokens[role.value], _ = await issue_access_token(db, actor=record.actor())
        if role is Role.MERCHANT:
            actor = await member_actor(db, record, membership.id)
            tokens["member"], _ = await issue_access_token(db, actor=actor)
    ids = [gid("Program", program.id), gid("Membership", membership.id),
           gid("Merchant", program.merchant_id), gid("Member", membership.member_id)]  # fmt: skip
    return tokens, ids


@pytest.mark.slow
async def test_generated_requests_never_fail_internally(db: Database) -> None:
    tokens, ids = await _tokens(db)
    app = create_app(db.settings, db=db)
    rng = random.Random(5)
    transport = httpx.ASGITransport(app=app)
    seen = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://alliance.test") as http:
        for operation in _operations():
            strategy = operation.as_strategy()
            for _ in range(CASES):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
                    case = strategy.example()
                query = _with_real_ids(str(case.body), ids, rng)
                for role, token in tokens.items():
                    answer = await http.post(
                        "/graphql", json={"query": query},
                        headers={"Authorization": f"Bearer {token}"},
                    )  # fmt: skip
                    seen += 1
                    assert answer.status_code < 500, (operation.label, role, query, answer.text)
                    body = answer.json()
                    for error in body.get("errors") or []:
                        code = (error.get("extensions") or {}).get("code")
                        assert code, (operation.label, role, query, error)
                        assert code != "INTERNAL_SERVER_ERROR", (operation.label, role, query)
    assert seen >= 3 * CASES * 20


ID_ARGUMENT = re.compile(r"\b(\w*[iI]ds?): (-?\d+|\"[^\"]*\")")


def _with_real_ids(query: str, ids: list[str], rng: random.Random) -> str:
    """Point most generated id arguments at real objects, so that mutations get past
    NOT_FOUND into the domain's own checks."""

    def swap(match: re.Match[str]) -> str:
        if rng.random() < 0.3:
            return match.group(0)
        return f'{match.group(1)}: "{rng.choice(ids)}"'

    return ID_ARGUMENT.sub(swap, query)
