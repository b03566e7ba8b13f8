"""An HTTP client on the real ASGI app (gateway.create_app) over the test database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from alliance.auth.clients import create_client
from alliance.auth.models import Role
from alliance.auth.tokens import issue_access_token
from alliance.config import Settings
from alliance.db.engine import Database
from gateway import create_app


@pytest.fixture
async def http(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db.settings, db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://alliance.test") as client:
        yield client


@pytest.fixture
async def production_http(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings: Settings = replace(db.settings, production=True)
    transport = httpx.ASGITransport(app=create_app(settings, db=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://alliance.test") as client:
        yield client


@pytest.fixture
async def operator_token(db: Database) -> str:
    client_id, _ = await create_client(db, name="ops", role=Role.OPERATOR, client_id="ops")
    from alliance.auth.clients import get_client

    record = await get_client(db, client_id)
    assert record is not None
    token, _ = await issue_access_token(db, actor=record.actor())
    return token
