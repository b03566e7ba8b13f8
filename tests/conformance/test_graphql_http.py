"""GraphQL over HTTP conformance: the `graphql-http` audit suite (npm) against the real
server. Skipped, saying why, where Node.js or the npm registry is not available."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from alliance.auth.clients import create_client, get_client
from alliance.auth.models import Role
from alliance.auth.tokens import issue_access_token
from alliance.db.engine import Database
from tests.chaos.harness import free_port, server, until_ready

AUDIT = Path(__file__).with_name("audit.mjs")
PACKAGES = ("graphql-http@1.22", "graphql@16")
NODE_DIR = Path(os.environ.get("ALLIANCE_NODE_CACHE", Path(tempfile.gettempdir()) / "alliance-npm"))

# Audits this server deliberately answers otherwise, with the reason.
ACCEPTED: dict[str, str] = {}


def _node_modules() -> Path:
    """graphql-http installed once per machine (the npm registry is the only network use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed: the graphql-http audit cannot run")
    modules = NODE_DIR / "node_modules"
    if not (modules / "graphql-http" / "package.json").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                 str(NODE_DIR), *PACKAGES],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"could not install graphql-http from npm: {error}")
    return modules


async def test_graphql_http_audit(db: Database) -> None:
    modules = _node_modules()
    client_id, _ = await create_client(db, name="audit", role=Role.OPERATOR, client_id="audit")
    record = await get_client(db, client_id)
    assert record is not None
    token, _ = await issue_access_token(db, actor=record.actor(), ttl_seconds=600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        with server(db, port) as process:
            await until_ready(client, process)
            # The script is copied next to the packages so that Node resolves them.
            script = modules.parent / AUDIT.name
            shutil.copyfile(AUDIT, script)
            done = await asyncio.to_thread(
                subprocess.run, ["node", str(script), f"{url}/graphql", token],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) > 20, "the audit suite ran"
    failed = [r for r in results if r["status"] == "error" and r["id"] not in ACCEPTED]
    warned = [r for r in results if r["status"] == "warn" and r["id"] not in ACCEPTED]
    report = "\n".join(
        f"{r['status']} {r['id']} {r['name']}: {r['reason']}" for r in failed + warned
    )
    assert not failed, report
    assert not warned, report
