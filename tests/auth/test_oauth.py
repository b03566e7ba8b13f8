import base64
from typing import Any

import pytest
from sqlalchemy import update

from alliance.auth.actor import Actor
from alliance.auth.clients import create_client, disable_client
from alliance.auth.models import OAuthClient, Role
from alliance.auth.oauth import (
    ACCESS_TOKEN_TYPE,
    MEMBERSHIP_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    OAuthResponse,
    token_endpoint,
)
from alliance.auth.tokens import TokenVerifier
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.members.models import Membership
from alliance.programs.queries import MerchantRecord
from tests.factories import make_membership, make_merchant, make_program

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CHALLENGE = 'Basic realm="points-alliance"'


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def request_token(
    db: Database, settings: Settings, form: dict[str, str], authorization: str | None = None
) -> OAuthResponse:
    response = await token_endpoint(db, settings, form=form, authorization=authorization)
    assert NO_STORE.items() <= response.headers.items()
    return response


def assert_error(response: OAuthResponse, status: int, error: str) -> None:
    assert (response.status, response.body["error"]) == (status, error), response.body


async def merchant_client(db: Database, merchant: MerchantRecord | None = None) -> tuple[str, str]:
    merchant = merchant or await make_merchant(db)
    return await create_client(db, name="POS", role=Role.MERCHANT, merchant_id=merchant.id)


def exchange_form(membership_id: int | str) -> dict[str, str]:
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": str(membership_id),
        "subject_token_type": MEMBERSHIP_TOKEN_TYPE,
    }


class TestClientCredentials:
    @pytest.mark.parametrize(
        ("role", "bound"),
        [
            (Role.OPERATOR, False),
            (Role.MERCHANT, True),
            (Role.FINANCE, True),
            (Role.FINANCE, False),
            (Role.AUDITOR, False),
        ],
    )
    async def test_each_client_role(
        self, db: Database, settings: Settings, role: Role, bound: bool
    ) -> None:
        merchant_id = (await make_merchant(db)).id if bound else None
        client_id, secret = await create_client(db, name="C", role=role, merchant_id=merchant_id)
        response = await request_token(
            db, settings, {"grant_type": "client_credentials"}, basic(client_id, secret)
        )
        assert response.status == 200, response.body
        assert response.body.keys() == {"access_token", "token_type", "expires_in"}
        assert response.body["token_type"] == "Bearer"
        assert response.body["expires_in"] == settings.access_token_ttl_seconds
        actor = await TokenVerifier(db, settings).verify(response.body["access_token"])
        assert actor == Actor(role, f"client:{client_id}", client_id, merchant_id=merchant_id)

    async def test_client_secret_post(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = await request_token(db, settings, form)
        assert response.status == 200, response.body

    async def test_scopes(self, db: Database, settings: Settings) -> None:
        client_id, secret = await create_client(db, name="Ops", role=Role.OPERATOR)
        async with db.autocommit() as conn:
            await conn.execute(update(OAuthClient).values(scopes=["read", "write"]))
        auth = basic(client_id, secret)
        everything = await request_token(db, settings, {"grant_type": "client_credentials"}, auth)
        assert everything.body["scope"] == "read write"
        narrowed = await request_token(
            db, settings, {"grant_type": "client_credentials", "scope": "read"}, auth
        )
        assert narrowed.body["scope"] == "read"
        actor = await TokenVerifier(db, settings).verify(narrowed.body["access_token"])
        assert actor.scopes == frozenset({"read"})
        beyond = await request_token(
            db, settings, {"grant_type": "client_credentials", "scope": "read admin"}, auth
        )
        assert_error(beyond, 400, "invalid_scope")


class TestClientAuthentication:
    async def test_wrong_secret_with_basic(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        response = await request_token(
            db, settings, {"grant_type": "client_credentials"}, basic(client_id, secret + "x")
        )
        assert_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert "access_token" not in response.body

    async def test_wrong_secret_with_post(self, db: Database, settings: Settings) -> None:
        client_id, _ = await merchant_client(db)
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "nope"}
        assert_error(await request_token(db, settings, form), 401, "invalid_client")

    async def test_unknown_and_disabled_clients(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        await disable_client(db, client_id)
        for auth in (basic(client_id, secret), basic("nobody", secret)):
            response = await request_token(db, settings, {"grant_type": "client_credentials"}, auth)
            assert_error(response, 401, "invalid_client")

    async def test_no_credentials(self, db: Database, settings: Settings) -> None:
        response = await request_token(db, settings, {"grant_type": "client_credentials"})
        assert_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == CHALLENGE

    @pytest.mark.parametrize(
        "authorization",
        [
            "Basic",
            "Basic !!!",
            "Basic " + base64.b64encode(b"no-colon").decode(),
            "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
            "basic " + base64.b64encode(b"id:").decode(),
        ],
    )
    async def test_malformed_basic(
        self, db: Database, settings: Settings, authorization: str
    ) -> None:
        response = await request_token(
            db, settings, {"grant_type": "client_credentials"}, authorization
        )
        assert_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"] == CHALLENGE

    async def test_two_methods_at_once(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        response = await request_token(db, settings, form, basic(client_id, secret))
        assert_error(response, 400, "invalid_request")

    async def test_form_client_id_must_match_basic(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        form = {"grant_type": "client_credentials", "client_id": "someone-else"}
        response = await request_token(db, settings, form, basic(client_id, secret))
        assert_error(response, 400, "invalid_request")


class TestGrantType:
    async def test_missing(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        response = await request_token(db, settings, {}, basic(client_id, secret))
        assert_error(response, 400, "invalid_request")

    @pytest.mark.parametrize("grant_type", ["password", "authorization_code", "refresh_token"])
    async def test_unsupported(self, db: Database, settings: Settings, grant_type: str) -> None:
        client_id, secret = await merchant_client(db)
        response = await request_token(
            db, settings, {"grant_type": grant_type}, basic(client_id, secret)
        )
        assert_error(response, 400, "unsupported_grant_type")


class TestMemberToken:
    async def test_for_own_active_membership(self, db: Database, settings: Settings) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        client_id, secret = await create_client(
            db, name="App", role=Role.MERCHANT, merchant_id=program.merchant_id
        )
        response = await request_token(
            db, settings, exchange_form(membership.id), basic(client_id, secret)
        )
        assert response.status == 200, response.body
        assert response.body["issued_token_type"] == ACCESS_TOKEN_TYPE
        assert response.body["token_type"] == "Bearer"
        actor = await TokenVerifier(db, settings).verify(response.body["access_token"])
        assert actor == Actor(
            Role.MEMBER,
            f"member:{membership.member_id}",
            client_id,
            merchant_id=program.merchant_id,
            member_id=membership.member_id,
            membership_id=membership.id,
        )

    async def test_requested_token_type(self, db: Database, settings: Settings) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        client_id, secret = await create_client(
            db, name="App", role=Role.MERCHANT, merchant_id=program.merchant_id
        )
        auth = basic(client_id, secret)
        form = exchange_form(membership.id)
        ok = await request_token(
            db, settings, form | {"requested_token_type": ACCESS_TOKEN_TYPE}, auth
        )
        assert ok.status == 200
        other = form | {"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"}
        assert_error(await request_token(db, settings, other, auth), 400, "invalid_request")

    async def test_foreign_and_unknown_memberships_look_alike(
        self, db: Database, settings: Settings
    ) -> None:
        foreign = await make_membership(db, await make_program(db))
        client_id, secret = await merchant_client(db)
        auth = basic(client_id, secret)
        answers = [
            await request_token(db, settings, exchange_form(membership_id), auth)
            for membership_id in (foreign.id, foreign.id + 1000, 2**63)
        ]
        for response in answers:
            assert_error(response, 400, "invalid_grant")
        assert answers[0].body == answers[1].body == answers[2].body

    async def test_closed_membership(self, db: Database, settings: Settings) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        async with db.autocommit() as conn:
            await conn.execute(update(Membership).values(status="closed"))
        client_id, secret = await create_client(
            db, name="App", role=Role.MERCHANT, merchant_id=program.merchant_id
        )
        response = await request_token(
            db, settings, exchange_form(membership.id), basic(client_id, secret)
        )
        assert_error(response, 400, "invalid_grant")

    @pytest.mark.parametrize(("role", "bound"), [(Role.FINANCE, True), (Role.OPERATOR, False)])
    async def test_only_merchant_clients(
        self, db: Database, settings: Settings, role: Role, bound: bool
    ) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        merchant_id = program.merchant_id if bound else None
        client_id, secret = await create_client(db, name="C", role=role, merchant_id=merchant_id)
        response = await request_token(
            db, settings, exchange_form(membership.id), basic(client_id, secret)
        )
        assert_error(response, 400, "unauthorized_client")

    async def test_client_must_authenticate(self, db: Database, settings: Settings) -> None:
        membership = await make_membership(db)
        response = await request_token(db, settings, exchange_form(membership.id))
        assert_error(response, 401, "invalid_client")

    @pytest.mark.parametrize(
        "change",
        [
            {"subject_token": ""},
            {"subject_token": "12abc"},
            {"subject_token": "-1"},
            {"subject_token": "²"},
            {"subject_token": "9" * 5000},
            {"subject_token_type": ACCESS_TOKEN_TYPE},
            {"subject_token_type": ""},
            {"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE},
        ],
    )
    async def test_malformed_request(
        self, db: Database, settings: Settings, change: dict[str, Any]
    ) -> None:
        client_id, secret = await merchant_client(db)
        response = await request_token(
            db, settings, exchange_form(1) | change, basic(client_id, secret)
        )
        assert_error(response, 400, "invalid_request")

    async def test_no_scopes_for_members(self, db: Database, settings: Settings) -> None:
        client_id, secret = await merchant_client(db)
        response = await request_token(
            db, settings, exchange_form(1) | {"scope": "admin"}, basic(client_id, secret)
        )
        assert_error(response, 400, "invalid_scope")
