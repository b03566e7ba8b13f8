"""The OAuth 2 token endpoint, free of any web framework: gateway.py passes the form and
the Authorization header in and writes the `OAuthResponse` out as JSON.

Grants:
- `client_credentials` (RFC 6749 §4.4) for every client role;
- `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693 style): a merchant
  client, authenticated as itself, exchanges the id of one of its own active
  memberships (`subject_token_type=urn:points-alliance:params:oauth:token-type:membership`)
  for a member token. Unknown and foreign memberships get the same `invalid_grant`.

Client authentication: `client_secret_basic` or `client_secret_post`, never both.

Why not authlib's `AuthorizationServer`: it is synchronous end to end - its
`query_client` and grant hooks would have to look the client up with a blocking
database call on the event loop (or through a thread hop per request), and the
token exchange grant is not one of its grants anyway. So the flow is written here
as a plain async function; from authlib it takes the RFC 6749 §5.2 error classes
(which carry the error code, status and rendered body) and the Basic-header and
scope helpers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from sqlalchemy import select

from alliance.auth.actor import Actor
from alliance.auth.clients import ClientRecord, authenticate_client
from alliance.auth.models import Role
from alliance.auth.tokens import issue_access_token
from alliance.config import Settings
from alliance.db.engine import Database
from alliance.errors import Inactive, NotFound
from alliance.members.models import Membership
from alliance.programs.models import Program

CLIENT_CREDENTIALS = "client_credentials"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
MEMBERSHIP_TOKEN_TYPE = "urn:points-alliance:params:oauth:token-type:membership"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REALM = "points-alliance"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""RFC 6749 §5.1: token responses, errors included, must not be cached."""
_MAX_MEMBERSHIP_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class OAuthResponse:
    status: int
    body: dict[str, Any]
    """Serialise as JSON (`application/json;charset=UTF-8`)."""
    headers: dict[str, str] = field(default_factory=lambda: dict(NO_STORE))


async def token_endpoint(
    db: Database,
    settings: Settings,
    *,
    form: Mapping[str, str],
    authorization: str | None,
    now: datetime | None = None,
) -> OAuthResponse:
    """Handle one POST to the token endpoint; every outcome is a response, never an exception."""
    try:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequestError("Missing grant_type")
        if grant_type not in (CLIENT_CREDENTIALS, TOKEN_EXCHANGE):
            raise UnsupportedGrantTypeError(grant_type)
        client = await _authenticate(db, form=form, authorization=authorization)
        if grant_type == CLIENT_CREDENTIALS:
            body = await _client_credentials(db, client, form=form, now=now)
        else:
            body = await _member_token(db, client, form=form, now=now)
    except InvalidClientError as error:
        # Always 401, which HTTP requires to name a scheme; RFC 6749 §5.2 requires
        # exactly this when the client tried HTTP Basic.
        headers = NO_STORE | {"WWW-Authenticate": f'Basic realm="{REALM}"'}
        return OAuthResponse(401, dict(error.get_body()), headers)
    except OAuth2Error as error:
        return OAuthResponse(error.status_code, dict(error.get_body()))
    return OAuthResponse(200, body)


async def _authenticate(
    db: Database, *, form: Mapping[str, str], authorization: str | None
) -> ClientRecord:
    basic = _basic_credentials(authorization)
    form_client_id, form_secret = form.get("client_id"), form.get("client_secret")
    if basic is not None:
        if form_secret is not None:
            raise InvalidRequestError("Use one client authentication method, not two")
        if form_client_id is not None and form_client_id != basic[0]:
            raise InvalidRequestError("client_id differs from the authenticated client")
        client_id, secret = basic
    elif form_client_id and form_secret:
        client_id, secret = form_client_id, form_secret
    else:
        raise InvalidClientError(description="Client authentication is required")
    client = await authenticate_client(db, client_id, secret)
    if client is None:
        # Unknown, wrong secret and disabled look the same.
        raise InvalidClientError(description="Client authentication failed")
    return client


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client_id, secret) from an HTTP Basic header; None when the header is not Basic."""
    scheme = authorization.split(None, 1) if authorization else []
    if not scheme or scheme[0].lower() != "basic":
        return None
    try:
        client_id, secret = extract_basic_authorization({"Authorization": authorization})
    except (UnicodeDecodeError, binascii.Error, ValueError):
        client_id = secret = None
    if not client_id or not secret:
        raise InvalidClientError(description="Malformed Basic credentials")
    return client_id, secret


async def _client_credentials(
    db: Database, client: ClientRecord, *, form: Mapping[str, str], now: datetime | None
) -> dict[str, Any]:
    requested = scope_to_list(form.get("scope")) or []
    if not set(requested) <= client.scopes:
        raise InvalidScopeError()
    # RFC 6749 §3.3: no scope requested means the client's default, here all of its scopes.
    scopes = frozenset(requested) or client.scopes
    token, expires_in = await issue_access_token(db, actor=client.actor(scopes), now=now)
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }
    if scopes:
        body["scope"] = " ".join(sorted(scopes))
    return body


async def _member_token(
    db: Database, client: ClientRecord, *, form: Mapping[str, str], now: datetime | None
) -> dict[str, Any]:
    if client.role is not Role.MERCHANT or client.merchant_id is None:
        raise UnauthorizedClientError("Only merchant clients may obtain member tokens")
    subject_token = form.get("subject_token")
    subject_token_type = form.get("subject_token_type")
    if not subject_token or not subject_token_type:
        raise InvalidRequestError("Missing subject_token or subject_token_type")
    if subject_token_type != MEMBERSHIP_TOKEN_TYPE:
        raise InvalidRequestError(f"subject_token_type must be {MEMBERSHIP_TOKEN_TYPE}")
    requested_type = form.get("requested_token_type")
    if requested_type is not None and requested_type != ACCESS_TOKEN_TYPE:
        raise InvalidRequestError(f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    if form.get("actor_token") or form.get("actor_token_type"):
        raise InvalidRequestError("actor_token is not supported: the client itself is the actor")
    if scope_to_list(form.get("scope")):
        raise InvalidScopeError("Member tokens carry no scopes")
    try:
        actor = await member_actor(db, client, _membership_id(subject_token))
    except NotFound:
        raise InvalidGrantError("Unknown membership") from None
    except Inactive:
        raise InvalidGrantError("Membership is not active") from None
    token, expires_in = await issue_access_token(db, actor=actor, now=now)
    return {
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }


async def member_actor(db: Database, client: ClientRecord, membership_id: int) -> Actor:
    """The member behind one of the client's merchant's active memberships, acting via the client.

    NotFound for unknown and foreign memberships alike; Inactive for closed ones.
    """
    async with db.autocommit() as conn:
        row = (
            await conn.execute(
                select(Membership.member_id, Membership.status)
                .join(Program, Program.id == Membership.program_id)
                .where(Membership.id == membership_id, Program.merchant_id == client.merchant_id)
            )
        ).first()
    if row is None or client.merchant_id is None:
        raise NotFound("membership not found")
    if row.status != "active":
        raise Inactive("membership is not active")
    return Actor(
        Role.MEMBER,
        f"member:{row.member_id}",
        client.client_id,
        merchant_id=client.merchant_id,
        member_id=row.member_id,
        membership_id=membership_id,
    )


def _membership_id(subject_token: str) -> int:
    """A membership id in decimal, or the GraphQL id (base64 of `Membership:<id>`)."""
    if not subject_token.isascii():
        raise InvalidRequestError("subject_token must be a membership id")
    if not subject_token.isdigit():
        try:
            padded = subject_token + "=" * (-len(subject_token) % 4)
            decoded = base64.b64decode(padded, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidRequestError("subject_token must be a membership id") from None
        type_name, _, subject_token = decoded.partition(":")
        if type_name != "Membership":
            raise InvalidRequestError("subject_token must be a membership id")
    return _decimal_membership_id(subject_token)


def _decimal_membership_id(subject_token: str) -> int:
    # ASCII digits only: str.isdigit() would also accept "²" or Arabic-Indic digits.
    if not (subject_token.isascii() and subject_token.isdigit() and len(subject_token) <= 19):
        raise InvalidRequestError("subject_token must be a membership id in decimal")
    membership_id = int(subject_token)
    if not 0 < membership_id <= _MAX_MEMBERSHIP_ID:
        raise InvalidGrantError("Unknown membership")  # what any id we do not have gets
    return membership_id
