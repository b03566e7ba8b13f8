"""Linking memberships through verified identifiers: codes, attempts, rate limits, races."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from alliance.db.engine import Database
from alliance.errors import InvalidInput, NotFound, RateLimited, VerificationFailed
from alliance.identity.delivery import delivered_code
from alliance.identity.models import IdentifierKind
from alliance.identity.service import (
    confirm_verification,
    set_privacy_policy,
    start_verification,
)
from alliance.members.queries import memberships_by_id
from tests.factories import (
    OPERATOR,
    give_points,
    make_membership,
    make_merchant,
    make_program,
    member_actor,
    merchant_actor,
)
from tests.identity.helpers import code_for, link

PHONE = "+86 138 0013 8000"


class TestStartVerification:
    async def test_code_reaches_the_outbox_sealed(self, db: Database) -> None:
        membership = await make_membership(db)
        program_merchant = await _merchant_of(db, membership.program_id)
        started = await start_verification(
            db,
            merchant_actor(program_merchant),
            membership_id=membership.id,
            kind=IdentifierKind.PHONE,
            identifier=PHONE,
        )
        assert started.masked == "+86138****8000"
        recipient, code = await delivered_code(db, started.id) or ("", "")
        assert recipient == "+8613800138000"
        assert len(code) == 6
        async with db.autocommit() as conn:
            dump = str((await conn.execute(text("SELECT payload FROM outbox_event"))).all())
            dump += str((await conn.execute(text("SELECT * FROM verification"))).all())
        assert "13800138000" not in dump
        assert code not in dump.replace(str(started.id), "")

    async def test_malformed_identifiers_are_user_errors(self, db: Database) -> None:
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        for kind, raw in ((IdentifierKind.PHONE, "12ab"), (IdentifierKind.EMAIL, "no-at-sign")):
            with pytest.raises(InvalidInput):
                await start_verification(
                    db, actor, membership_id=membership.id, kind=kind, identifier=raw
                )

    async def test_foreign_membership_is_not_found(self, db: Database) -> None:
        membership = await make_membership(db)
        other = await make_merchant(db)
        with pytest.raises(NotFound):
            await start_verification(
                db,
                merchant_actor(other),
                membership_id=membership.id,
                kind=IdentifierKind.PHONE,
                identifier=PHONE,
            )

    async def test_rate_limited_per_identifier_in_the_database(self, db: Database) -> None:
        await set_privacy_policy(db, OPERATOR, per_identifier_per_hour=3)
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))

        async def start() -> object:
            return await start_verification(
                db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE, identifier=PHONE
            )

        results = await asyncio.gather(*(start() for _ in range(6)), return_exceptions=True)
        assert sum(isinstance(r, RateLimited) for r in results) == 3
        # Another spelling of the same number is the same identifier.
        with pytest.raises(RateLimited):
            await start_verification(
                db,
                actor,
                membership_id=membership.id,
                kind=IdentifierKind.PHONE,
                identifier="13800138000",
            )

    async def test_rate_limited_per_client(self, db: Database) -> None:
        await set_privacy_policy(db, OPERATOR, per_client_per_hour=2)
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        for n in range(2):
            await start_verification(
                db,
                actor,
                membership_id=membership.id,
                kind=IdentifierKind.EMAIL,
                identifier=f"a{n}@example.com",
            )
        with pytest.raises(RateLimited):
            await start_verification(
                db,
                actor,
                membership_id=membership.id,
                kind=IdentifierKind.EMAIL,
                identifier="z@example.com",
            )


class TestConfirmVerification:
    async def test_wrong_codes_are_counted_and_exhaust_the_code(self, db: Database) -> None:
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        started = await start_verification(
            db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE, identifier=PHONE
        )
        code = await code_for(db, started.id)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            with pytest.raises(VerificationFailed):
                await confirm_verification(db, actor, verification_id=started.id, code=wrong)
        # Exhausted: even the right code no longer works.
        with pytest.raises(VerificationFailed):
            await confirm_verification(db, actor, verification_id=started.id, code=code)
        async with db.autocommit() as conn:
            attempts = await conn.scalar(text("SELECT attempts FROM verification"))
        assert attempts == 5

    async def test_unknown_and_foreign_verifications_answer_alike(self, db: Database) -> None:
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        started = await start_verification(
            db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE, identifier=PHONE
        )
        code = await code_for(db, started.id)
        stranger = merchant_actor(await make_merchant(db))
        for actor_, verification_id in ((stranger, started.id), (actor, started.id + 999)):
            with pytest.raises(VerificationFailed) as caught:
                await confirm_verification(db, actor_, verification_id=verification_id, code=code)
            assert caught.value.message == "the code is wrong or has expired"

    async def test_expired_code_fails(self, db: Database) -> None:
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        started = await start_verification(
            db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE, identifier=PHONE
        )
        async with db.autocommit() as conn:
            await conn.execute(text("UPDATE verification SET expires_at = now()"))
        with pytest.raises(VerificationFailed):
            await confirm_verification(
                db, actor, verification_id=started.id, code=await code_for(db, started.id)
            )

    async def test_a_code_links_once(self, db: Database) -> None:
        membership = await make_membership(db)
        actor = merchant_actor(await _merchant_of(db, membership.program_id))
        started = await start_verification(
            db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE, identifier=PHONE
        )
        code = await code_for(db, started.id)
        linked = await confirm_verification(db, actor, verification_id=started.id, code=code)
        assert linked.member_id == membership.member_id
        assert linked.merge is None
        with pytest.raises(VerificationFailed):
            await confirm_verification(db, actor, verification_id=started.id, code=code)


class TestLinkingAcrossMerchants:
    async def test_second_merchant_links_to_the_same_member(self, db: Database) -> None:
        program_a, program_b = await make_program(db), await make_program(db)
        a = await make_membership(db, program_a)
        b = await make_membership(db, program_b)
        await give_points(db, b, program_b, 70)
        await link(db, merchant_actor(program_a.merchant_id), a, PHONE)
        linked = await link(db, merchant_actor(program_b.merchant_id), b, "13800138000")
        assert linked.member_id == a.member_id
        assert linked.merge is not None
        found = await memberships_by_id(db, OPERATOR, [a.id, b.id])
        assert {m.member_id for m in found.values()} == {a.member_id}
        assert found[b.id].balance == 70

    async def test_a_member_links_their_own_membership(self, db: Database) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        actor = member_actor(membership, program.merchant_id)
        linked = await link(db, actor, membership, "Li.Na@Example.COM", IdentifierKind.EMAIL)
        assert linked.member_id == membership.member_id

    async def test_two_merchants_racing_to_link_one_phone_end_with_one_member(
        self, db: Database
    ) -> None:
        programs = [await make_program(db) for _ in range(4)]
        memberships = [await make_membership(db, program) for program in programs]
        for membership, program in zip(memberships, programs, strict=True):
            await give_points(db, membership, program, 10)
        actors = [merchant_actor(program.merchant_id) for program in programs]
        spellings = ["+86 138 0013 8000", "13800138000", "0086-138-0013-8000", "+8613800138000"]
        started = [
            await start_verification(
                db,
                actor,
                membership_id=membership.id,
                kind=IdentifierKind.PHONE,
                identifier=spelling,
            )
            for actor, membership, spelling in zip(actors, memberships, spellings, strict=True)
        ]
        codes = [await code_for(db, s.id) for s in started]
        results = await asyncio.gather(
            *(
                confirm_verification(db, actor, verification_id=s.id, code=code)
                for actor, s, code in zip(actors, started, codes, strict=True)
            )
        )
        members = {r.member_id for r in results}
        assert len(members) == 1
        found = await memberships_by_id(db, OPERATOR, [m.id for m in memberships])
        assert {m.member_id for m in found.values()} == members
        assert all(m.balance == 10 and m.status == "active" for m in found.values())
        async with db.autocommit() as conn:
            identifiers = await conn.scalar(text("SELECT count(*) FROM member_identifier"))
        assert identifiers == 1


async def _merchant_of(db: Database, program_id: int) -> int:
    async with db.autocommit() as conn:
        merchant = await conn.scalar(
            text("SELECT merchant_id FROM program WHERE id = :id"), {"id": program_id}
        )
    assert merchant is not None
    return int(merchant)


class TestDeliveryChannel:
    async def test_a_provider_plugs_in_per_kind(self, db: Database) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        from alliance.identity import delivery
        from alliance.identity.identifiers import Keyring

        sent: list[delivery.CodeMessage] = []

        class Sms:
            async def deliver(
                self, session: AsyncSession, keys: Keyring, message: delivery.CodeMessage
            ) -> None:
                sent.append(message)

        previous = delivery.set_channel(IdentifierKind.PHONE, Sms())
        try:
            membership = await make_membership(db)
            actor = merchant_actor(await _merchant_of(db, membership.program_id))
            started = await start_verification(
                db, actor, membership_id=membership.id, kind=IdentifierKind.PHONE,
                identifier=PHONE,
            )  # fmt: skip
        finally:
            delivery.set_channel(IdentifierKind.PHONE, previous)
        assert [(m.verification_id, m.recipient) for m in sent] == [(started.id, "+8613800138000")]
        assert await delivered_code(db, started.id) is None  # nothing went to the outbox
        linked = await confirm_verification(
            db, actor, verification_id=started.id, code=sent[0].code
        )
        assert linked.member_id == membership.member_id


class TestKeyRotation:
    async def test_rotation_then_rekey_keeps_matching(self, db: Database) -> None:
        import dataclasses

        from alliance.identity.service import rekey_identifiers
        from tests.conftest import TEST_SECRET_KEY

        old_key = "k1:" + TEST_SECRET_KEY
        new_key = "k2:b3RoZXItc2VjcmV0LWtleS1vdGhlci1zZWNyZXQta2U="
        before = Database(db.url, dataclasses.replace(db.settings, identity_keys=old_key))
        rotated = Database(
            db.url, dataclasses.replace(db.settings, identity_keys=f"{new_key},{old_key}")
        )
        after = Database(db.url, dataclasses.replace(db.settings, identity_keys=new_key))
        try:
            program_a, program_b, program_c = [await make_program(before) for _ in range(3)]
            a = await make_membership(before, program_a)
            await link(before, merchant_actor(program_a.merchant_id), a, PHONE)
            # After the rotation, the old digest still matches: B joins A's member.
            b = await make_membership(rotated, program_b)
            linked = await link(rotated, merchant_actor(program_b.merchant_id), b, PHONE)
            assert linked.member_id == a.member_id
            assert await rekey_identifiers(rotated) == 1
            assert await rekey_identifiers(rotated) == 0
            # With the old key gone, the re-keyed identifier still matches.
            c = await make_membership(after, program_c)
            linked = await link(after, merchant_actor(program_c.merchant_id), c, "13800138000")
            assert linked.member_id == a.member_id
        finally:
            for database in (before, rotated, after):
                await database.dispose()
