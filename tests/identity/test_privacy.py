"""Privacy rights: the export holds everything; erasure leaves no personal data anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import NotFound, ObligationsUnsettled
from alliance.identity import privacy
from alliance.identity.models import ConsentPurpose, IdentifierKind
from alliance.identity.privacy import ObligationSource, erase_member, export_member_data
from alliance.identity.service import set_consent, set_privacy_policy
from alliance.ledger.service import spend_points
from alliance.ledger.verify import verify_ledger
from alliance.members.queries import memberships_by_id
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.graphql.helpers import ok
from tests.identity.helpers import link

PHONE, PHONE_DIGITS = "+86 138 0013 8000", "13800138000"
EMAIL = "Li.Na@Example.COM"
NAME = "李娜 Zhang"
NUMBER_A, NUMBER_B = "VIP-5550001", "u-77-5550002"


async def _person(db: Database) -> tuple[list[int], int]:
    """A member known to two merchants, linked by phone and e-mail, with points, a spend,
    consents, an unlinked-then-verified history: personal data in every table it reaches."""
    program_a, program_b = await make_program(db), await make_program(db)
    a = await make_membership(db, program_a, member_number=NUMBER_A, display_name=NAME)
    b = await make_membership(db, program_b, member_number=NUMBER_B, display_name=NAME)
    await give_points(db, a, program_a, 120)
    await give_points(db, b, program_b, 80)
    await spend_points(db, merchant_actor(program_a.merchant_id), membership_id=a.id,
                       points=20, reason="coffee", idempotency_key="spend-1")  # fmt: skip
    await link(db, merchant_actor(program_a.merchant_id), a, PHONE)
    await link(db, merchant_actor(program_b.merchant_id), b, PHONE_DIGITS)
    await link(db, member_actor(a, program_a.merchant_id), a, EMAIL, IdentifierKind.EMAIL)
    member = member_actor(a, program_a.merchant_id)
    await set_consent(db, member, merchant_id=program_a.merchant_id,
                      purpose=ConsentPurpose.PARTNER_BALANCES, granted=True)  # fmt: skip
    await set_consent(db, member, merchant_id=program_b.merchant_id,
                      purpose=ConsentPurpose.MARKETING, granted=False)  # fmt: skip
    return [a.id, b.id], a.member_id


NEEDLES = [
    "+8613800138000", PHONE_DIGITS, "138 0013", "li.na@example.com", "Li.Na@Example.COM",
    NAME, "李娜", NUMBER_A, NUMBER_B,
]  # fmt: skip


async def _plaintext_anywhere(db: Database) -> list[str]:
    """Every (table.column, needle) where a personal string appears, in any text, JSON,
    array or binary column of any table."""
    found = []
    async with db.autocommit() as conn:
        columns = (
            await conn.execute(
                text(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND data_type IN ('text',"
                    " 'character varying', 'json', 'jsonb', 'ARRAY', 'bytea')"
                    " ORDER BY table_name, column_name"
                )
            )
        ).all()
        assert len(columns) > 30  # the scan really covers the schema
        for table, column, data_type in columns:
            if data_type == "bytea":
                condition = f"position(convert_to(:n, 'UTF8') in \"{column}\") > 0"
            else:
                condition = f'strpos("{column}"::text, :n) > 0'
            for needle in NEEDLES:
                hit = await conn.scalar(
                    text(f'SELECT count(*) FROM "{table}" WHERE {condition}'), {"n": needle}
                )
                if hit:
                    found.append(f"{table}.{column}: {needle}")
    return found


class TestExport:
    async def test_export_contains_everything(self, db: Database) -> None:
        memberships, member_id = await _person(db)
        document = await export_member_data(db, OPERATOR, member_id=member_id)
        assert document["member"]["display_name"] == NAME
        assert sorted(i["value"] for i in document["identifiers"]) == [
            "+8613800138000", "li.na@example.com",
        ]  # fmt: skip
        assert sorted(m["member_number"] for m in document["memberships"]) == [NUMBER_A, NUMBER_B]
        assert sorted(m["id"] for m in document["memberships"]) == sorted(memberships)
        assert sum(m["balance"] for m in document["memberships"]) == 180
        # The full ledger history of both accounts (the second one joined by the merge).
        kinds = sorted(t["kind"] for t in document["transactions"])
        assert kinds == ["award", "award", "spend"]
        assert sum(lot["remaining"] for lot in document["lots"]) == 180
        assert {(c["purpose"], c["withdrawn_at"] is None) for c in document["consents"]} == {
            ("partner_balances", True),
        }
        assert len(document["verifications"]) == 3
        assert len(document["merges"]) == 1
        assert document["merges"][0]["initiated_by"] == "verification"
        assert {a["action"] for a in document["audit"]} >= {
            "membership.enroll", "identity.link", "consent.grant", "member.merge",
        }  # fmt: skip
        # Every table that holds a member's rows is in the export (a new one must be added).
        async with db.autocommit() as conn:
            with_member = set(
                (
                    await conn.execute(
                        text(
                            "SELECT DISTINCT table_name FROM information_schema.columns"
                            " WHERE table_schema = 'public' AND column_name IN ('member_id',"
                            " 'membership_id', 'survivor_id')"
                        )
                    )
                ).scalars()
            )
        covered = {
            "account": "memberships", "consent": "consents", "hold": "holds", "lot": "lots",
            "member_identifier": "identifiers", "member_merge": "merges",
            "membership": "memberships", "membership_tier": "memberships",
            "tier_change": "tier_history", "posting": "transactions",
            "ledger_transaction": "transactions", "verification": "verifications",
            "outbox_event": "(deliveries: events about the member, not data about them)",
            "qualifying_activity": "tier_history", "action_claim": "transactions",
            "referral": "transactions", "earn_counter": "transactions",
            "membership_unlink": "unlinks", "exchange": "exchanges",
            "exchange_quote": "exchange_quotes", "settlement_obligation": "settlement_obligations",
            "redemption": "redemptions", "adjustment_request": "adjustments",
            "appeal": "appeals",
        }  # fmt: skip
        assert with_member - set(covered) == set()

    async def test_member_exports_through_graphql(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program, display_name=NAME)
        data = await ok(
            db, member_actor(membership, program.merchant_id),
            "mutation { exportMyData(input: {}) { document userErrors { code } } }",
        )  # fmt: skip
        document = data["exportMyData"]["document"]
        assert document["member"]["display_name"] == NAME
        assert document["format"] == "points-alliance/member-export/1"


class TestErase:
    async def test_erase_leaves_no_plaintext_personal_data_anywhere(self, db: Database) -> None:
        memberships, member_id = await _person(db)
        before = await memberships_by_id(db, OPERATOR, memberships)
        assert await _plaintext_anywhere(db) != []  # the scan finds what is there
        erased = await erase_member(db, OPERATOR, member_id=member_id)
        assert not erased.replayed
        assert await _plaintext_anywhere(db) == []
        # The ledger is whole: balances kept, every invariant holds.
        after = await memberships_by_id(db, OPERATOR, memberships)
        assert {k: v.balance for k, v in after.items()} == {k: v.balance for k, v in before.items()}
        assert all(m.member_number == f"erased-{m.id}" for m in after.values())
        assert await verify_ledger(db) == []
        again = await erase_member(db, OPERATOR, member_id=member_id)
        assert again.replayed

    async def test_member_erases_themself_but_nobody_else(self, db: Database) -> None:
        program = await make_program(db)
        a = await make_membership(db, program, display_name=NAME)
        b = await make_membership(db, program)
        with pytest.raises(NotFound):
            await erase_member(db, member_actor(a, program.merchant_id), member_id=b.member_id)
        erased = await erase_member(db, member_actor(a, program.merchant_id))
        assert erased.member_id == a.member_id

    async def test_unsettled_obligations_block_erasure_when_the_policy_says_so(
        self, db: Database, obligations: str
    ) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        async with db.autocommit() as conn:
            await conn.execute(
                text(f"INSERT INTO {obligations} VALUES (:m, false)"),
                {"m": membership.member_id},
            )
        with pytest.raises(ObligationsUnsettled):
            await erase_member(db, OPERATOR, member_id=membership.member_id)
        await set_privacy_policy(db, OPERATOR, erase_requires_settlement=False)
        await erase_member(db, OPERATOR, member_id=membership.member_id)

    async def test_settled_obligations_do_not_block(self, db: Database, obligations: str) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        async with db.autocommit() as conn:
            await conn.execute(
                text(f"INSERT INTO {obligations} VALUES (:m, true)"), {"m": membership.member_id}
            )
        await erase_member(db, OPERATOR, member_id=membership.member_id)


@pytest.fixture
def obligations(db: Database) -> Iterator[str]:
    """A stand-in for the settlement team's obligations table, pointed at by the policy."""
    import asyncio

    async def run(sql: str) -> None:
        async with db.autocommit() as conn:
            await conn.execute(text(sql))

    loop = asyncio.get_event_loop()
    loop.run_until_complete(run("CREATE TABLE test_obligation (member_id bigint, settled boolean)"))
    previous = privacy.OBLIGATIONS
    privacy.OBLIGATIONS = ObligationSource("test_obligation", "member_id", "o.settled")
    yield "test_obligation"
    privacy.OBLIGATIONS = previous
    loop.run_until_complete(run("DROP TABLE test_obligation"))


class TestRetention:
    async def test_verifications_past_retention_are_purged_with_their_codes(
        self, db: Database
    ) -> None:
        from tests.test_cli import _alliance

        program = await make_program(db)
        membership = await make_membership(db, program)
        await link(db, merchant_actor(program.merchant_id), membership, PHONE)
        await link(db, merchant_actor(program.merchant_id), membership, EMAIL,
                   IdentifierKind.EMAIL)  # fmt: skip
        await set_privacy_policy(db, OPERATOR, verification_retention_days=7)
        async with db.autocommit() as conn:
            await conn.execute(
                text(
                    "UPDATE verification SET created_at = now() - interval '8 days'"
                    " WHERE kind = 'phone'"
                )
            )
        result = await _alliance(db, "jobs", "run", "privacy")
        assert result.returncode == 0, result.stderr
        assert "deleted 1 verifications" in result.stdout
        async with db.autocommit() as conn:
            left = await conn.scalar(text("SELECT count(*) FROM verification"))
            codes = await conn.scalar(
                text("SELECT count(*) FROM outbox_event WHERE topic = 'identity.code'")
            )
        assert (left, codes) == (1, 1)


async def test_cli_shows_a_delivered_code_outside_production(db: Database) -> None:
    from alliance.identity.service import start_verification
    from tests.identity.helpers import code_for
    from tests.test_cli import _alliance

    program = await make_program(db)
    membership = await make_membership(db, program)
    started = await start_verification(
        db, merchant_actor(program.merchant_id), membership_id=membership.id,
        kind=IdentifierKind.PHONE, identifier=PHONE,
    )  # fmt: skip
    shown = await _alliance(db, "identity", "code", str(started.id))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == await code_for(db, started.id)
    missing = await _alliance(db, "identity", "code", "999999")
    assert missing.returncode == 1


async def test_an_erased_member_cannot_be_linked_again(db: Database) -> None:
    from alliance.errors import NotFound as Missing
    from alliance.identity.service import start_verification

    program = await make_program(db)
    membership = await make_membership(db, program)
    await erase_member(db, OPERATOR, member_id=membership.member_id)
    with pytest.raises(Missing):
        await start_verification(
            db, merchant_actor(program.merchant_id), membership_id=membership.id,
            kind=IdentifierKind.PHONE, identifier=PHONE,
        )  # fmt: skip
