"""The HTTP edges: token endpoint to GraphQL, 401s, limits, masking, health."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from alliance.auth.clients import create_client
from alliance.auth.models import Role
from alliance.db.engine import Database
from tests.factories import give_points, make_membership, make_program
from tests.graphql.helpers import gid

VIEWER = {"query": "{ viewer { role clientId } }"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def graphql(http: httpx.AsyncClient, token: str | None, body: Any) -> httpx.Response:
    headers = bearer(token) if token else {}
    return await http.post("/graphql", json=body, headers=headers)


class TestEndToEnd:
    async def test_client_credentials_then_graphql(
        self, db: Database, http: httpx.AsyncClient
    ) -> None:
        client_id, secret = await create_client(db, name="ops", role=Role.OPERATOR)
        response = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        token = response.json()["access_token"]
        answer = await graphql(http, token, VIEWER)
        assert answer.json() == {"data": {"viewer": {"role": "OPERATOR", "clientId": client_id}}}

    async def test_member_token_by_graphql_id_then_spend(
        self, db: Database, http: httpx.AsyncClient
    ) -> None:
        program = await make_program(db)
        membership = await make_membership(db, program)
        await give_points(db, membership, program, 30)
        client_id, secret = await create_client(
            db, name="pos", role=Role.MERCHANT, merchant_id=program.merchant_id
        )
        response = await http.post(
            "/oauth/token",
            auth=(client_id, secret),
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": gid("Membership", membership.id),
                "subject_token_type": "urn:points-alliance:params:oauth:token-type:membership",
            },
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        spend = await graphql(
            http,
            token,
            {
                "query": """mutation($input: MovePointsInput!) { spendPoints(input: $input) {
                entry { balanceAfter } userErrors { code } } }""",
                "variables": {
                    "input": {
                        "membershipId": gid("Membership", membership.id),
                        "points": 10,
                        "reason": "coffee",
                        "idempotencyKey": "m-1",
                    }
                },
            },
        )
        assert spend.json()["data"]["spendPoints"] == {
            "entry": {"balanceAfter": 20},
            "userErrors": [],
        }

    async def test_repeated_token_parameters_are_refused(
        self, db: Database, http: httpx.AsyncClient
    ) -> None:
        client_id, secret = await create_client(db, name="ops", role=Role.OPERATOR)
        response = await http.post(
            "/oauth/token",
            auth=(client_id, secret),
            content=b"grant_type=client_credentials&grant_type=client_credentials",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    async def test_jwks_lists_the_signing_key(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
        assert [key["alg"] for key in keys] == ["EdDSA"]
        assert all("d" not in key for key in keys), "private material must never be published"


class TestAuthentication:
    async def test_no_token_gets_unauthenticated_error(self, http: httpx.AsyncClient) -> None:
        response = await graphql(http, None, VIEWER)
        assert response.status_code == 200
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    @pytest.mark.parametrize(
        "header",
        [
            "Bearer",
            "Bearer ",
            "Basic b3BzOnNlY3JldA==",
            "Bearer not.a.token",
            "Bearer a.b.c",
            "Token abc",
        ],
    )
    async def test_bad_authorization_is_401(self, http: httpx.AsyncClient, header: str) -> None:
        response = await http.post("/graphql", json=VIEWER, headers={"Authorization": header})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer realm="points-alliance"')
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    async def test_tampered_token_is_401(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        head, payload, signature = operator_token.split(".")
        tampered = f"{head}.{payload[:-2]}AA.{signature}"
        response = await graphql(http, tampered, VIEWER)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


class TestLimits:
    async def test_body_over_limit_is_413(self, db: Database, http: httpx.AsyncClient) -> None:
        body = b'{"query": "' + b" " * (db.settings.max_body_bytes + 10) + b'{ __typename }"}'
        response = await http.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"

    async def test_chunked_body_over_limit_is_413(
        self, db: Database, http: httpx.AsyncClient
    ) -> None:
        async def chunks() -> Any:
            for _ in range(db.settings.max_body_bytes // 1024 + 2):
                yield b" " * 1024

        response = await http.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413

    async def test_deep_query_is_refused(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        inner = "id"
        for _ in range(8):
            inner = f"memberships {{ edges {{ node {{ member {{ {inner} }} }} }} }}"
        response = await graphql(
            http, operator_token, {"query": f"{{ programs {{ edges {{ node {{ {inner} }} }} }} }}"}
        )
        errors = response.json()["errors"]
        assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "exceeds maximum operation depth" in errors[0]["message"]

    async def test_alias_bomb_is_refused(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        aliases = " ".join(f"a{n}: viewer {{ role }}" for n in range(100))
        response = await graphql(http, operator_token, {"query": f"{{ {aliases} }}"})
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

    async def test_token_flood_is_refused(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        fields = " ".join(["__typename"] * 4000)
        response = await graphql(http, operator_token, {"query": f"{{ {fields} }}"})
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"

    async def test_batched_operations_are_refused(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        response = await graphql(http, operator_token, [VIEWER, VIEWER])
        assert response.status_code == 400

    async def test_syntax_error_has_code(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        response = await graphql(http, operator_token, {"query": "{ viewer { "})
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


class TestEdges:
    async def test_health_and_readiness(self, http: httpx.AsyncClient) -> None:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}

    async def test_request_id_is_echoed_or_made(self, http: httpx.AsyncClient) -> None:
        given = await http.get("/healthz", headers={"X-Request-ID": "req-42"})
        assert given.headers["x-request-id"] == "req-42"
        made = await http.get("/healthz", headers={"X-Request-ID": "bad id\n"})
        assert len(made.headers["x-request-id"]) == 16

    async def test_graphiql_outside_production(
        self, http: httpx.AsyncClient, production_http: httpx.AsyncClient
    ) -> None:
        page = await http.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "graphiql" in page.text.lower()
        assert (
            await production_http.get("/graphql", headers={"accept": "text/html"})
        ).status_code == 404

    async def test_introspection_off_in_production(
        self, production_http: httpx.AsyncClient, operator_token: str
    ) -> None:
        response = await graphql(
            production_http, operator_token, {"query": "{ __schema { types { name } } }"}
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

    async def test_unexpected_errors_are_masked(
        self, http: httpx.AsyncClient, operator_token: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import schema.queries

        async def explode(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("secret internals: password=hunter2")

        monkeypatch.setattr(schema.queries, "list_merchants", explode)
        response = await graphql(
            http, operator_token, {"query": "{ merchants { edges { cursor } } }"}
        )
        body = response.json()
        error = body["errors"][0]
        assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
        assert "hunter2" not in response.text


class TestUnavailable:
    async def test_pool_exhaustion_is_503_with_retry_after(
        self, http: httpx.AsyncClient, operator_token: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        import schema.queries

        async def exhausted(*args: Any, **kwargs: Any) -> None:
            raise PoolTimeout("QueuePool limit of size 10 overflow 5 reached")

        monkeypatch.setattr(schema.queries, "list_merchants", exhausted)
        response = await graphql(
            http, operator_token, {"query": "{ merchants { edges { cursor } } }"}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"

    async def test_database_down_is_503(self, db: Database, operator_token: str) -> None:
        from gateway import create_app

        down = Database("postgresql+psycopg://postgres@/alliance?host=/nonexistent", db.settings)
        transport = httpx.ASGITransport(app=create_app(db.settings, db=down))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            answer = await graphql(http, operator_token, VIEWER)
            assert answer.status_code == 503
            assert answer.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        await down.dispose()


class TestErrorsThatEscapeTheEndpoint:
    """A POST reaches the GraphQL endpoint past Starlette's exception handlers
    (EdgeMiddleware._graphql), a GET through them: both answer an escaping error alike."""

    @pytest.fixture
    def failing_verifier(self, monkeypatch: pytest.MonkeyPatch) -> list[Exception]:
        from alliance.auth.tokens import TokenVerifier

        raised: list[Exception] = []

        async def verify(self: TokenVerifier, token: str) -> None:
            raise raised[0]

        monkeypatch.setattr(TokenVerifier, "verify", verify)
        return raised

    async def _both(self, http: httpx.AsyncClient) -> list[httpx.Response]:
        headers = {"Authorization": "Bearer x.y.z"}
        post = await http.post("/graphql", json=VIEWER, headers=headers)
        get = await http.get("/graphql", params=VIEWER, headers=headers)
        return [post, get]

    async def test_a_database_outage_is_503(
        self, http: httpx.AsyncClient, failing_verifier: list[Exception]
    ) -> None:
        import psycopg

        failing_verifier.append(psycopg.OperationalError("connection refused"))
        for answer in await self._both(http):
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "2"
            assert answer.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE"}

    async def test_anything_else_is_a_masked_500(
        self, http: httpx.AsyncClient, failing_verifier: list[Exception]
    ) -> None:
        failing_verifier.append(RuntimeError("secret internals: password=hunter2"))
        for answer in await self._both(http):
            assert answer.status_code == 500
            [error] = answer.json()["errors"]
            assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
            assert answer.headers["x-request-id"] in error["message"]
            assert "hunter2" not in answer.text


class TestMediaTypes:
    """GraphQL over HTTP: application/graphql-response+json when the client accepts it."""

    GRAPHQL_RESPONSE = "application/graphql-response+json"

    async def _post(
        self, http: httpx.AsyncClient, token: str, query: str, accept: str
    ) -> httpx.Response:
        return await http.post(
            "/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {token}", "Accept": accept},
        )

    @pytest.mark.parametrize("query", ["{ merchants {", "{ noSuchField }"])
    async def test_a_rejected_request_is_400_without_data(
        self, http: httpx.AsyncClient, operator_token: str, query: str
    ) -> None:
        answer = await self._post(http, operator_token, query, self.GRAPHQL_RESPONSE)
        assert answer.status_code == 400
        assert answer.headers["content-type"].startswith(self.GRAPHQL_RESPONSE)
        body = answer.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] in {
            "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"}  # fmt: skip
        legacy = await self._post(http, operator_token, query, "application/json")
        assert legacy.status_code == 200
        assert legacy.headers["content-type"].startswith("application/json")

    async def test_a_good_request_in_either_type(
        self, http: httpx.AsyncClient, operator_token: str
    ) -> None:
        for accept in (self.GRAPHQL_RESPONSE, "application/json"):
            answer = await self._post(http, operator_token, "{ viewer { role } }", accept)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith(accept)
            assert answer.json()["data"] == {"viewer": {"role": "OPERATOR"}}
