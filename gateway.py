"""The ASGI application: HTTP edges around the GraphQL schema.

    /graphql                  GraphQL over HTTP (GraphiQL on GET when not in production)
    /oauth/token              OAuth 2 token endpoint (client credentials, member tokens)
    /.well-known/jwks.json    public keys that verify our access tokens
    /healthz, /readyz         liveness; readiness (the database answers)

Authentication happens here, once per request: a bearer token becomes an
`Actor` (or a 401), and the GraphQL context carries it to the domain.
The middleware is plain ASGI: Starlette's BaseHTTPMiddleware costs a task per request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
from psycopg_pool import PoolTimeout as HotPoolTimeout
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from alliance.adjustments.service import run_adjustment_expiry_schedule
from alliance.auth.keys import active_signing_key, jwks
from alliance.auth.oauth import NO_STORE, token_endpoint
from alliance.auth.tokens import TokenVerifier
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import Forbidden, NotFound, Unauthenticated
from alliance.events.dispatcher import run_webhook_dispatcher
from alliance.events.expiring import run_expiring_schedule
from alliance.ledger.expiry import run_expiry_schedule
from alliance.logs import AccessLog, configure_logging, new_request_id, request_id_var
from alliance.settlement.export import open_statement
from alliance.settlement.export import statement_csv as export_statement
from alliance.settlement.run import run_settlement_schedule
from alliance.tiers.review import run_tier_review_schedule
from schema import create_schema
from schema.context import Context
from schema.errors import UNAVAILABLE, with_code

log = logging.getLogger("alliance.gateway")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
RETRY_AFTER_SECONDS = "2"


class Services:
    """What the request handlers share: opened in the lifespan, or injected by tests."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self._db = db
        self._verifier: TokenVerifier | None = None

    @property
    def db(self) -> Database:
        assert self._db is not None, "the database opens in the application lifespan"
        return self._db

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            self._verifier = TokenVerifier(self.db, self.settings)
        return self._verifier

    async def open(self) -> None:
        if self._db is None:
            if not self.settings.database_url:
                raise RuntimeError("ALLIANCE_DATABASE_URL is not set (alliance serve sets it)")
            self._db = Database(self.settings.database_url, self.settings)
        # Every connection of the hot pool opens now, not under the first burst of load.
        await self.db.open()
        # Fails fast when the secret key cannot unseal the signing key.
        await active_signing_key(self.db)
        await self.verifier.load_keys()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.dispose()


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def _graphql_error(
    message: str, code: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    return _json({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers)


GRAPHQL_RESPONSE = "application/graphql-response+json"
REQUEST_ERRORS = {"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"}
"""Codes of errors raised before execution (variable coercion counts as validation)."""


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, services: Services) -> None:
        settings = services.settings
        super().__init__(
            create_schema(settings),
            graphql_ide=None if settings.production else "graphiql",
            allow_queries_via_get=False,
        )
        self.services = services

    async def get_context(self, request: Any, response: Any) -> Context:
        return Context(
            db=self.services.db,
            settings=self.services.settings,
            viewer=request.scope.get("actor"),
            request_id=request_id_var.get(),
        )

    async def on_ws_connect(self, context: Context) -> None:
        """graphql-transport-ws: the token comes in connection_init's payload
        ({"Authorization": "Bearer <token>"}); no valid token, no connection (4403)."""
        params = context.connection_params or {}
        given = params.get("Authorization") or params.get("authorization") or ""
        scheme, _, token = str(given).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        try:
            context.viewer = await self.services.verifier.verify(token.strip())
        except Unauthenticated:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"}) from None

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def get_sub_response(self, request: Any) -> Response:
        sub_response = await super().get_sub_response(request)
        request.scope["sub_response"] = sub_response
        return sub_response

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        status, headers, body = http_answer(result, request.headers.get("accept", ""))
        sub_response = request.scope["sub_response"]
        if status is not None:
            sub_response.status_code = status
        sub_response.content_type = headers.pop("content-type", None)
        sub_response.headers.update(headers)
        return body

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Any
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        content_type = getattr(sub_response, "content_type", None)
        if content_type is not None:
            response.headers["content-type"] = content_type
        return response


def http_answer(
    result: ExecutionResult, accept: str
) -> tuple[int | None, dict[str, str], GraphQLHTTPResponse]:
    """The status (None: 200), extra headers and body that answer one result.

    Every error gets its code here, parse failures included (they skip the schema's
    error presentation). With the GraphQL-over-HTTP media type accepted, a request
    that never reached execution (unparsable, invalid, bad variables) is a 400 without
    `data`; with plain application/json it stays a 200, as that spec says.
    """
    errors = result.errors or ()
    for error in errors:
        with_code(error)
    codes = {(error.extensions or {}).get("code") for error in errors}
    typed = GRAPHQL_RESPONSE in accept
    rejected = typed and result.data is None and bool(errors) and codes <= REQUEST_ERRORS
    status: int | None = None
    headers: dict[str, str] = {}
    if UNAVAILABLE in codes:
        # A database outage is not the client's fault: answer 503 so it retries.
        status = 503
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    elif rejected:
        status = 400
    if typed:
        headers["content-type"] = f"{GRAPHQL_RESPONSE}; charset=utf-8"
    body = process_result(result)
    if rejected:
        body.pop("data", None)
    return status, headers, body


class GraphQLEndpoint:
    """Authenticates the bearer token, then answers a plain JSON POST itself (`_post`) and
    hands everything else over to the GraphQL view."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.view = GraphQLView(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services, view = self.services, self.view
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            challenge = 'Bearer realm="points-alliance"'
            if scheme.lower() != "bearer" or not token.strip():
                response = _graphql_error(
                    "Authorization must be 'Bearer <token>'",
                    "UNAUTHENTICATED",
                    401,
                    {"WWW-Authenticate": challenge},
                )
                await response(scope, receive, send)
                return
            try:
                scope["actor"] = await services.verifier.verify(token.strip())
            except Unauthenticated as error:
                description = error.message.replace('"', "'")
                response = _graphql_error(
                    error.message,
                    "UNAUTHENTICATED",
                    401,
                    {
                        "WWW-Authenticate": f'{challenge}, error="invalid_token", '
                        f'error_description="{description}"'
                    },
                )
                await response(scope, receive, send)
                return
        if scope["method"] == "POST":
            await self._post(scope, receive, send)
        else:
            await view(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A plain JSON POST of one query or mutation, answered here; anything else (other
        media types, streams, batches, malformed bodies, subscriptions) by the view.

        The view's request and response objects, content negotiation and hooks cost
        about as much as executing a small query; this is what it does for such a
        request, through the same schema and `http_answer`.
        """
        body = await _read_body(receive)
        assert body is not None  # no limit here: EdgeMiddleware bounded the body
        accept = _header(scope, b"accept") or ""
        request = _plain_request(_header(scope, b"content-type"), accept, body)
        if request is None:
            await self.view(scope, _replay(body), send)
            return
        query, variables, operation_name, extensions = request
        services = self.services
        context = Context(
            db=services.db,
            settings=services.settings,
            viewer=scope.get("actor"),
            request_id=request_id_var.get(),
        )
        try:
            result = await self.view.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=QUERY_OR_MUTATION,
                operation_extensions=extensions,
            )
        except InvalidOperationTypeError:
            # A subscription wants a stream; as one JSON answer it would only fail.
            response = _graphql_error(NOT_A_STREAM, "BAD_REQUEST", 400)
            await response(scope, receive, send)
            return
        except CannotGetOperationTypeError:
            # Refused before execution (nothing ran): the view answers as it does.
            await self.view(scope, _replay(body), send)
            return
        status, headers, answer = http_answer(result, accept)
        content = orjson.dumps(answer)
        raw = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", headers.pop("content-type", "application/json").encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ]
        await send({"type": "http.response.start", "status": status or 200, "headers": raw})
        await send({"type": "http.response.body", "body": content})


NOT_A_STREAM = (
    "a subscription is served as a stream over a WebSocket at /graphql (graphql-transport-ws)"
)
QUERY_OR_MUTATION = frozenset({OperationType.QUERY, OperationType.MUTATION})

PlainRequest = tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]
"""query, variables, operationName, extensions"""


def _plain_request(content_type: str | None, accept: str, body: bytes) -> PlainRequest | None:
    """The request, when it is one JSON object of the usual members with a query text and
    asks for no stream; None otherwise."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json" or "multipart/" in accept or "event-stream" in accept:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    query = data.get("query")
    variables = data.get("variables")
    operation_name = data.get("operationName")
    extensions = data.get("extensions")
    if (
        not isinstance(query, str)
        or not query
        or not isinstance(variables, dict | None)
        or not isinstance(operation_name, str | None)
        or not isinstance(extensions, dict | None)
    ):
        return None
    return query, variables, operation_name, extensions


async def _read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The request's body; None when it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class EdgeMiddleware:
    """Request id, access log, body size limit, and a clean answer for every failure."""

    def __init__(
        self, app: ASGIApp, settings: Settings, graphql: GraphQLEndpoint | None = None
    ) -> None:
        self.app = app
        self.graphql = graphql
        self.max_body = settings.max_body_bytes
        self.access_log = AccessLog() if settings.access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await self._too_large(scope, receive, send_with_id)
                return
            if length is None and scope["method"] in {"POST", "PUT", "PATCH"}:
                # Chunked: read it here, bounded, so an oversized body is refused
                # before any handler has started a response.
                buffered = await _read_body(receive, self.max_body)
                if buffered is None:
                    await self._too_large(scope, receive, send_with_id)
                    return
                receive = _replay(buffered)
            if self.graphql is not None and scope["method"] == "POST" and _is_graphql(scope):
                await self._graphql(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            # Handlers below answer first; this guards what escapes them.
            log.exception("unhandled error")
            if not response_started:
                await _internal_error(request_id)(scope, receive, send_with_id)
        finally:
            if self.access_log is not None:
                self.access_log.record(
                    message=f"{scope['method']} {scope['path']} {status}",
                    request_id=request_id,
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            request_id_var.reset(token)

    async def _graphql(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /graphql straight to its endpoint, past Starlette's router and exception
        layers (~25 µs a request): what they do with an exception the endpoint lets
        through is done here. A database outage is a 503; anything else goes up to
        `__call__`, which logs it and answers 500, as after Starlette's handler."""
        assert self.graphql is not None
        scope["app"] = self.app
        try:
            await self.graphql(scope, receive, send)
        except UNAVAILABLE_ERRORS as error:
            response = await _unavailable(None, error)
            await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _graphql_error(
            f"request body exceeds {self.max_body} bytes", "PAYLOAD_TOO_LARGE", 413
        )
        await response(scope, receive, send)


def _is_graphql(scope: Scope) -> bool:
    return scope["path"] == "/graphql" and not scope.get("root_path")


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _tune_garbage_collector() -> None:
    """Keep the cyclic GC off the request path.

    Requests allocate many short-lived objects, so the default thresholds run a
    collection every few requests, and full collections walk every long-lived
    object (schema, modules) each time: latency spikes at the tail. Objects alive
    after start-up are frozen out of collection; young collections run less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def _internal_error(request_id: str | None) -> Response:
    return _graphql_error(f"internal error (request id {request_id})", "INTERNAL_SERVER_ERROR", 500)


UNAVAILABLE_ERRORS = (PoolTimeout, OperationalError, HotPoolTimeout, psycopg.OperationalError)
"""What a database outage or an exhausted pool raises: a 503 that says to retry."""


async def _unavailable(request: Request | None, error: Exception) -> Response:
    log.warning("database unavailable: %s", error)
    return _graphql_error(
        "the service is busy or its database is unavailable; retry shortly",
        "SERVICE_UNAVAILABLE",
        503,
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _unexpected(request: Request, error: Exception) -> Response:
    # Starlette re-raises after answering; EdgeMiddleware logs it once, with the request id.
    return _internal_error(request_id_var.get())


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> ASGIApp:
    settings = settings or Settings.from_env()
    services = Services(settings, db)

    async def token(request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=20)
        except Exception:  # malformed or multipart abuse: starlette raises several kinds
            return _json(
                {"error": "invalid_request", "error_description": "malformed form body"},
                400,
                dict(NO_STORE),
            )
        items = form.multi_items()
        fields = {key: value for key, value in items if isinstance(value, str)}
        if len(fields) != len(items):
            # RFC 6749 §3.2: parameters must not be repeated (nor be files).
            return _json(
                {"error": "invalid_request", "error_description": "repeated or non-text parameter"},
                400,
                dict(NO_STORE),
            )
        result = await token_endpoint(
            services.db, settings, form=fields, authorization=request.headers.get("authorization")
        )
        return _json(result.body, result.status, result.headers)

    async def public_keys(request: Request) -> Response:
        return _json(await jwks(services.db), headers={"Cache-Control": "public, max-age=300"})

    async def statement_csv(request: Request) -> Response:
        """A settlement statement as CSV (columns: alliance/settlement/export.py)."""
        authorization = request.headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _json(
                {"error": "authentication required"},
                401,
                {"WWW-Authenticate": 'Bearer realm="points-alliance"'},
            )
        try:
            actor = await services.verifier.verify(token.strip())
            raw = request.path_params["statement_id"]
            statement_id = int(raw) if raw.isdigit() and len(raw) < 19 else 0
            statement = await open_statement(services.db, actor, statement_id)
        except Unauthenticated as error:
            return _json({"error": error.message}, 401)
        except Forbidden as error:
            return _json({"error": error.message}, 403)
        except NotFound as error:
            return _json({"error": error.message}, 404)
        detail = request.query_params.get("detail") == "obligations"
        return StreamingResponse(
            export_statement(services.db, actor, statement, detail=detail),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="statement-{statement.id}'
                f'{"-obligations" if detail else ""}.csv"',
                **NO_STORE,
            },
        )

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(services.db.fetch_one("SELECT 1"), timeout=2)
        except Exception as error:  # readiness reports any failure, it never raises
            return _json(
                {"status": "unavailable", "reason": type(error).__name__},
                503,
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        return _json({"status": "ready"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.open()
        jobs = []
        if settings.jobs:
            jobs.append(
                asyncio.create_task(
                    run_expiry_schedule(
                        services.db, interval_seconds=settings.expiry_interval_seconds
                    ),
                    name="expiry schedule",
                )
            )
            jobs.append(
                asyncio.create_task(
                    run_tier_review_schedule(
                        services.db, interval_seconds=settings.tier_review_interval_seconds
                    ),
                    name="tier review schedule",
                )
            )
            jobs.append(
                asyncio.create_task(
                    run_settlement_schedule(
                        services.db, interval_seconds=settings.settlement_interval_seconds
                    ),
                    name="settlement schedule",
                )
            )
            jobs.append(
                asyncio.create_task(
                    run_adjustment_expiry_schedule(
                        services.db, interval_seconds=settings.expiry_interval_seconds
                    ),
                    name="adjustment expiry schedule",
                )
            )
            jobs.append(
                asyncio.create_task(run_webhook_dispatcher(services.db), name="webhook dispatcher")
            )
            jobs.append(
                asyncio.create_task(
                    run_expiring_schedule(
                        services.db, interval_seconds=settings.expiry_interval_seconds
                    ),
                    name="expiring points notice",
                )
            )
        _tune_garbage_collector()
        yield
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await services.close()

    graphql = GraphQLEndpoint(services)  # POSTs reach it from EdgeMiddleware directly
    app = Starlette(
        routes=[
            # First: the router tries each route's pattern in turn, and nearly every
            # request is for this one.
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/oauth/token", token, methods=["POST"]),
            Route("/.well-known/jwks.json", public_keys),
            WebSocketRoute("/graphql", GraphQLView(services)),
            Route("/settlement/statements/{statement_id}.csv", statement_csv),
        ],
        lifespan=lifespan,
        exception_handlers={
            **dict.fromkeys(UNAVAILABLE_ERRORS, _unavailable),
            Exception: _unexpected,
        },
    )
    app.state.services = services
    return EdgeMiddleware(app, settings, graphql)


def app_factory() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """For `uvicorn --factory gateway:app_factory`: settings from the environment.

    Each worker process is its own interpreter, so logging is configured here.
    """
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)
