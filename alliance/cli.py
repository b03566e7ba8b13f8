"""The `alliance` command: serve, migrate, verify, import, clients, tokens, keys, schema,
identity."""

from __future__ import annotations

import asyncio
import enum
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from alliance.auth.models import Role
from alliance.config import Settings
from alliance.db import migrate
from alliance.db.engine import Database
from alliance.db.runtime import database_url
from alliance.logs import configure_logging

if TYPE_CHECKING:
    from alliance.auth.actor import Actor
    from alliance.imports import ImportRejected, ImportReport

app = typer.Typer(
    help="Points Alliance: one ledger for many merchants' points programs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
client_app = typer.Typer(
    help="OAuth clients of merchant apps and service accounts.", no_args_is_help=True
)
keys_app = typer.Typer(help="Keys that sign access tokens.", no_args_is_help=True)
schema_app = typer.Typer(help="The GraphQL schema (SDL).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(client_app, name="client")
app.add_typer(keys_app, name="keys")
app.add_typer(schema_app, name="schema")
jobs_app = typer.Typer(help="Background jobs, run once now.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
import_app = typer.Typer(
    help="Bulk import from a merchant's previous system (CSV, header row required).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")
identity_app = typer.Typer(help="Identity federation tools for local use.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "schema.graphql"


def _with_database(
    settings: Settings, work: Callable[[Database], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Run `work` against the database (the embedded one when no URL is configured).

    The embedded database is ours, so it is migrated first; an external one is
    migrated only by `alliance db upgrade` and `alliance serve`.
    """
    with database_url(settings) as url:
        if not settings.database_url and not read_only:
            migrate.upgrade(url)

        async def run() -> T:
            db = Database(url, settings)
            try:
                return await work(db)
            finally:
                await db.dispose()

        return asyncio.run(run())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    demo: Annotated[bool, typer.Option(help="Seed demo merchants, members and tokens.")] = False,
) -> None:
    """Run the API (migrating first); with no ALLIANCE_DATABASE_URL, on embedded PostgreSQL."""
    import uvicorn

    from alliance.auth.keys import ensure_signing_key
    from alliance.serving import serve as serve_workers

    if demo:
        # Demo tokens last a day; tokens may not outlive the key-rotation window.
        from alliance.demo import DEMO_TOKEN_TTL

        os.environ.setdefault("ALLIANCE_TOKEN_TTL", str(DEMO_TOKEN_TTL))
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    with database_url(settings) as url:
        migrate.upgrade(url)

        async def prepare() -> None:
            db = Database(url, settings)
            try:
                await ensure_signing_key(db)
                if demo:
                    from alliance.demo import print_demo, seed_demo

                    print_demo(await seed_demo(db), f"http://{host}:{port}", console)
            finally:
                await db.dispose()

        asyncio.run(prepare())
        # Worker processes read their settings from the environment.
        os.environ["ALLIANCE_DATABASE_URL"] = url
        os.environ["ALLIANCE_DATA_DIR"] = str(settings.data_dir)
        console.print(f"[bold green]GraphiQL[/] http://{host}:{port}/graphql  (Ctrl+C stops)")
        serve_workers(
            uvicorn.Config(
                "gateway:app_factory",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                loop="uvloop",
                http="alliance.serving:HttpToolsProtocol",
                log_config=None,
                access_log=False,
                # Nothing reads the client's address or scheme: no X-Forwarded-* rewriting
                # (a middleware layer on every request).
                proxy_headers=False,
                timeout_graceful_shutdown=20,
            )
        )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION."""
    settings = Settings.from_env()
    with database_url(settings) as url:
        migrate.upgrade(url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION."""
    settings = Settings.from_env()
    with database_url(settings) as url:
        migrate.downgrade(url, revision)
    console.print(f"database at {revision}")


@app.command()
def verify(limit: int = typer.Option(20, help="Violations shown per check.")) -> None:
    """Check every ledger invariant; exit 1 and list the violations if any fails."""
    from alliance.ledger.verify import CHECKS, verify_ledger

    async def work(db: Database) -> list[object]:
        return list(await verify_ledger(db, limit=limit))

    violations = _with_database(Settings.from_env(), work, read_only=True)
    if not violations:
        console.print(f"[green]ledger verified[/]: {len(CHECKS)} invariants hold")
        return
    table = Table("invariant", "violation", title=f"{len(violations)} violation(s)")
    for violation in violations:
        table.add_row(violation.check, violation.detail)  # type: ignore[attr-defined]
    err.print(table)
    raise typer.Exit(1)


@client_app.command("create")
def client_create(
    name: Annotated[str, typer.Option(help="Who uses it, e.g. 'Golden Wok POS'.")],
    role: Annotated[Role, typer.Option(help="operator, merchant, finance or auditor.")],
    merchant: Annotated[str | None, typer.Option(help="Merchant code it is bound to.")] = None,
    client_id: Annotated[str | None, typer.Option(help="Choose the client id.")] = None,
) -> None:
    """Create an OAuth client; its secret is shown once."""
    from alliance.auth.clients import create_client

    async def work(db: Database) -> tuple[str, str]:
        merchant_id = None if merchant is None else await _merchant_id(db, merchant)
        return await create_client(
            db, name=name, role=role, merchant_id=merchant_id, client_id=client_id
        )

    created_id, secret = _with_database(Settings.from_env(), work)
    console.print(f"client_id     {created_id}\nclient_secret {secret}")
    console.print("[dim]The secret is not stored and cannot be shown again.[/]")


@app.command()
def token(
    client: Annotated[str, typer.Option(help="The client id to mint a token for.")],
    membership: Annotated[
        int | None, typer.Option(help="Mint a member token for this membership (merchant client).")
    ] = None,
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
) -> None:
    """Mint an access token for local use (no secret needed: you hold the database)."""
    from alliance.auth.clients import get_client
    from alliance.auth.oauth import member_actor
    from alliance.auth.tokens import issue_access_token

    async def work(db: Database) -> str:
        record = await get_client(db, client)
        if record is None:
            err.print(f"no client {client}")
            raise typer.Exit(2)
        actor = record.actor()
        if membership is not None:
            actor = await member_actor(db, record, membership)
        minted, _ = await issue_access_token(db, actor=actor, ttl_seconds=ttl)
        return minted

    print(_with_database(Settings.from_env(), work))


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Start signing with a new key; tokens signed by the old one stay valid until they expire."""
    from alliance.auth.keys import rotate_signing_key

    kid = _with_database(Settings.from_env(), rotate_signing_key)
    console.print(f"now signing with key {kid}")


@keys_app.command("list")
def keys_list() -> None:
    """The keys published in the JWKS."""
    from alliance.auth.keys import jwks

    published = _with_database(Settings.from_env(), jwks)
    for key in published["keys"]:
        console.print(key["kid"])


class Job(enum.StrEnum):
    EXPIRE = "expire"
    TIERS = "tiers"
    HOLDS = "holds"
    SETTLEMENT = "settlement"
    PRIVACY = "privacy"
    REWARDS = "rewards"
    ADJUSTMENTS = "adjustments"
    WEBHOOKS = "webhooks"
    EXPIRING = "expiring"


@jobs_app.command("run")
def jobs_run(
    job: Annotated[
        Job,
        typer.Argument(
            help="expire: post every due lot remainder. tiers: start grace periods, move "
            "members down whose grace has passed, carry members onto a new ladder version. "
            "holds: release the points of authorizations past their deadline. "
            "settlement: close every settlement period that has ended. "
            "privacy: delete verifications and their sealed codes past the retention period. "
            "rewards: release redemptions past their deadline (points, coupon, stock). "
            "adjustments: expire adjustment requests nobody decided in time. "
            "webhooks: fan out new events and deliver every webhook due now. "
            "expiring: tell members (points.expiring) of points expiring within 7 days."
        ),
    ],
    batch_size: Annotated[
        int | None, typer.Option(help="Lots or memberships per transaction.")
    ] = None,
) -> None:
    """Run a background job once, now (the server also runs it on a schedule)."""
    if batch_size is not None and batch_size < 1:
        err.print("--batch-size must be at least 1")
        raise typer.Exit(2)
    if job is Job.HOLDS:
        from alliance.ledger import holds

        async def release(db: Database) -> int:
            return await holds.release_expired_holds(
                db, batch_size=batch_size or holds.RELEASE_BATCH
            )

        released = _with_database(Settings.from_env(), release)
        console.print(f"released {released} expired holds")
        return
    if job is Job.EXPIRING:
        from alliance.events.expiring import notify_expiring

        async def tell(db: Database) -> int:
            return await notify_expiring(db, batch=batch_size or 1000)

        console.print(f"wrote {_with_database(Settings.from_env(), tell)} points.expiring events")
        return
    if job is Job.WEBHOOKS:
        from alliance.events.dispatcher import Round, dispatch_due

        async def deliver(db: Database) -> Round:
            return await dispatch_due(db)

        sent = _with_database(Settings.from_env(), deliver)
        console.print(
            f"fanned out {sent.fanned_out} events: {sent.delivered} delivered,"
            f" {sent.failed} failed (retried later), {sent.dead} dead"
        )
        return
    if job is Job.ADJUSTMENTS:
        from alliance.adjustments import service as adjustments

        async def expire_requests(db: Database) -> int:
            return await adjustments.expire_adjustments(
                db, batch_size=batch_size or adjustments.EXPIRY_BATCH
            )

        console.print(
            f"expired {_with_database(Settings.from_env(), expire_requests)} adjustment requests"
        )
        return
    if job is Job.SETTLEMENT:
        from alliance.settlement import run as settlement

        async def settle(db: Database) -> list[settlement.PeriodRecord]:
            return await settlement.run_settlement(db, settlement.SETTLEMENT_JOB)

        closed = _with_database(Settings.from_env(), settle)
        for period in closed:
            console.print(
                f"closed {period.starts_at:%Y-%m-%d %H:%M} – {period.ends_at:%Y-%m-%d %H:%M}"
                f" UTC: {period.obligations} obligations"
            )
        console.print(f"closed {len(closed)} settlement periods")
    if job is Job.PRIVACY:
        from alliance.identity.privacy import purge_verifications

        purged = _with_database(Settings.from_env(), purge_verifications)
        console.print(f"deleted {purged} verifications past the retention period")
    if job is Job.REWARDS:
        from alliance.rewards import redemptions

        async def release_redemptions(db: Database) -> int:
            return await redemptions.release_expired_redemptions(
                db, batch_size=batch_size or redemptions.RELEASE_BATCH
            )

        released = _with_database(Settings.from_env(), release_redemptions)
        console.print(f"released {released} expired redemptions")
        return
    if job is Job.TIERS:
        from alliance.tiers import review as tiers

        async def review(db: Database) -> tiers.TierReview:
            return await tiers.review_tiers(db, batch_size=batch_size or tiers.BATCH_SIZE)

        done = _with_database(Settings.from_env(), review)
        console.print(
            f"reviewed {done.reviewed} memberships in {done.batches} batches: {done.moved} tier"
            f" changes, {done.graced} grace periods started, {done.cancelled} cancelled,"
            f" {done.busy} busy (next run)"
        )
        return
    from alliance.ledger import expiry

    async def expire(db: Database) -> expiry.ExpiryRun:
        return await expiry.expire_points(db, batch_size=batch_size or expiry.BATCH_SIZE)

    run = _with_database(Settings.from_env(), expire)
    console.print(f"expired {run.lots} lots, {run.points} points, in {run.batches} batches")


@identity_app.command("code")
def identity_code(verification_id: int) -> None:
    """Show the one-time code the outbox holds for a verification (local use and the demo:
    it stands in for the phone or mailbox; refused in production mode)."""
    settings = Settings.from_env()
    if settings.production:
        err.print("refused in production mode: codes go to the member, not to the console")
        raise typer.Exit(2)
    from alliance.identity.delivery import delivered_code

    async def read(db: Database) -> tuple[str, str] | None:
        return await delivered_code(db, verification_id)

    found = _with_database(settings, read, read_only=True)
    if found is None:
        err.print(f"no code was delivered for verification {verification_id}")
        raise typer.Exit(1)
    console.print(found[1])


@identity_app.command("rekey")
def identity_rekey() -> None:
    """Re-seal and re-digest identifiers under the current identity key (after adding a new
    first key to ALLIANCE_IDENTITY_KEYS); afterwards the older keys can be removed."""
    from alliance.identity.service import rekey_identifiers

    changed = _with_database(Settings.from_env(), rekey_identifiers)
    console.print(f"re-keyed {changed} identifiers")


ImportFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file (UTF-8).")
]
ImportProgram = Annotated[int, typer.Option("--program", help="The program's id.")]
ShownErrors = Annotated[int, typer.Option(help="Row errors listed when the file is refused.")]


@import_app.command("members")
def import_members_command(
    file: ImportFile, program: ImportProgram, show: ShownErrors = 20
) -> None:
    """Enrol the file's members: columns member_number, display_name (optional).

    All or nothing; members already enrolled under the same number are skipped.
    """
    from alliance.imports import import_members

    report = _run_import(file, program, show, import_members)
    console.print(
        f"imported {report.imported:,} members into program {program}"
        f" ({report.skipped:,} already enrolled, skipped)"
    )


@import_app.command("balances")
def import_balances_command(
    file: ImportFile, program: ImportProgram, show: ShownErrors = 20
) -> None:
    """Post opening balances: columns member_number, points, earned_at and expires_at (optional).

    Times are ISO-8601 with a zone; without expires_at, the program's expiry policy
    counts from earned_at (default: now). All or nothing; rows already imported
    are skipped.
    """
    from alliance.imports import import_balances

    report = _run_import(file, program, show, import_balances)
    console.print(
        f"imported {report.imported:,} opening balances, {report.points:,} points, into program"
        f" {program} ({report.skipped:,} already imported, skipped)"
    )


class _ImportUseCase(Protocol):
    def __call__(
        self, db: Database, actor: Actor, *, program_id: int, source: IO[bytes], max_errors: int
    ) -> Awaitable[ImportReport]: ...


def _run_import(file: Path, program_id: int, show: int, use_case: _ImportUseCase) -> ImportReport:
    """Run an import as the operator acting for the program's merchant; exit 1 if refused."""
    from alliance.errors import DomainError
    from alliance.imports import ImportRejected

    async def work(db: Database) -> ImportReport:
        actor = await _operator_for_program(db, program_id)
        return await use_case(
            db, actor, program_id=program_id, source=source, max_errors=max(show, 1)
        )

    try:
        with file.open("rb") as source:
            return _with_database(Settings.from_env(), work)
    except ImportRejected as rejected:
        _print_rejected(file, rejected, show)
    except DomainError as error:
        err.print(f"[red]import refused[/]: {error.message}")
    except OSError as error:
        err.print(f"cannot read {file}: {error.strerror or error}")
        raise typer.Exit(2) from None
    raise typer.Exit(1)


def _print_rejected(file: Path, rejected: ImportRejected, show: int) -> None:
    shown = rejected.errors[:show]
    table = Table(
        "line",
        "member number",
        "problem",
        title=f"{rejected.error_count:,} error(s) in {file.name}: nothing was imported",
        caption=None
        if len(shown) == rejected.error_count
        else f"the first {len(shown)} of {rejected.error_count:,} errors, by line",
    )
    for error in shown:
        table.add_row(str(error.line), error.member_number or "", error.message)
    err.print(table)


async def _operator_for_program(db: Database, program_id: int) -> Actor:
    from sqlalchemy import select

    from alliance.auth.actor import Actor
    from alliance.programs.models import Program

    async with db.autocommit() as conn:
        merchant_id = await conn.scalar(select(Program.merchant_id).where(Program.id == program_id))
    if merchant_id is None:
        err.print(f"no program {program_id}")
        raise typer.Exit(2)
    return Actor(Role.OPERATOR, f"cli:{_login()}", "alliance-cli", merchant_id=int(merchant_id))


def _login() -> str:
    """Who runs the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@schema_app.command("export")
def schema_export(
    check: Annotated[
        bool, typer.Option(help="Exit 1 if the file is stale; write nothing.")
    ] = False,
    path: Path = SCHEMA_FILE,
) -> None:
    """Write the SDL of the schema to schema/schema.graphql."""
    from schema import sdl

    current = sdl()
    if check:
        if not path.exists() or path.read_text() != current:
            err.print(f"{path} is stale: run `alliance schema export`")
            raise typer.Exit(1)
        console.print(f"{path} is up to date")
        return
    path.write_text(current)
    console.print(f"wrote {path}")


async def _merchant_id(db: Database, code: str) -> int:
    from sqlalchemy import select

    from alliance.programs.models import Merchant

    async with db.autocommit() as conn:
        found = await conn.scalar(select(Merchant.id).where(Merchant.code == code))
    if found is None:
        err.print(f"no merchant with code {code}")
        raise typer.Exit(2)
    return int(found)


def main() -> None:
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
