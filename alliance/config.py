"""Settings, read once from the environment (ALLIANCE_*).

Every setting has a default that works on a fresh machine: no database URL means
the embedded PostgreSQL, no secret key means a generated one kept beside the
embedded data directory (refused in production mode).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import platformdirs

APP_NAME = "points-alliance"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"ALLIANCE_{name}")
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    return int(raw) if raw is not None else default


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def default_data_dir() -> Path:
    # As root the embedded server runs as another user and must traverse every
    # parent directory: keep it out of /root rather than opening /root up.
    if os.geteuid() == 0:
        return Path("/var/lib") / APP_NAME
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    """External PostgreSQL; None starts the embedded server."""
    data_dir: Path = field(default_factory=default_data_dir)
    production: bool = False
    secret_key: str | None = None
    """Base64 of 32 bytes; encrypts signing keys at rest."""
    time_zone: str = "Asia/Shanghai"
    currency: str = "CNY"
    issuer: str = "points-alliance"
    audience: str = "points-alliance"
    access_token_ttl_seconds: int = 3600
    pool_size: int = 16
    """Autocommit connections per process for the hot path (ledger movements, reads)."""
    session_pool_size: int = 4
    """Connections per process for multi-statement transactions (+ as many overflow)."""
    pool_timeout_seconds: float = 5.0
    statement_timeout_ms: int = 15_000
    max_body_bytes: int = 256 * 1024
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 3000
    access_log: bool = True
    shared_reads: bool = True
    """Concurrent requests' reads of the same statement share one round trip
    (alliance/db/shared_reads.py)."""
    jobs: bool = True
    """Run scheduled jobs (points expiry, tier review) inside `alliance serve`."""
    expiry_interval_seconds: int = 900
    tier_review_interval_seconds: int = 3600
    settlement_interval_seconds: int = 3600
    """How often `serve` closes settlement periods that have ended."""
    log_level: str = "INFO"
    identity_keys: str | None = None
    """`kid:base64,kid:base64` (first current): identifier digests and ciphertexts
    (alliance/identity/identifiers.py). None: one key derived from `secret_key`."""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        return cls(
            database_url=_env("DATABASE_URL"),
            data_dir=Path(_env("DATA_DIR") or defaults.data_dir),
            production=_env_bool("PRODUCTION", False),
            secret_key=_env("SECRET_KEY"),
            time_zone=_env("TIME_ZONE", defaults.time_zone) or defaults.time_zone,
            currency=_env("CURRENCY", defaults.currency) or defaults.currency,
            issuer=_env("ISSUER", defaults.issuer) or defaults.issuer,
            audience=_env("AUDIENCE", defaults.audience) or defaults.audience,
            access_token_ttl_seconds=_env_int("TOKEN_TTL", defaults.access_token_ttl_seconds),
            pool_size=_env_int("POOL_SIZE", defaults.pool_size),
            session_pool_size=_env_int("SESSION_POOL_SIZE", defaults.session_pool_size),
            pool_timeout_seconds=float(
                _env("POOL_TIMEOUT", str(defaults.pool_timeout_seconds)) or "5"
            ),
            statement_timeout_ms=_env_int("STATEMENT_TIMEOUT_MS", defaults.statement_timeout_ms),
            max_body_bytes=_env_int("MAX_BODY_BYTES", defaults.max_body_bytes),
            max_query_depth=_env_int("MAX_QUERY_DEPTH", defaults.max_query_depth),
            max_aliases=_env_int("MAX_ALIASES", defaults.max_aliases),
            max_tokens=_env_int("MAX_TOKENS", defaults.max_tokens),
            access_log=_env_bool("ACCESS_LOG", defaults.access_log),
            shared_reads=_env_bool("SHARED_READS", defaults.shared_reads),
            jobs=_env_bool("JOBS", defaults.jobs),
            expiry_interval_seconds=_env_int("EXPIRY_INTERVAL", defaults.expiry_interval_seconds),
            tier_review_interval_seconds=_env_int(
                "TIER_REVIEW_INTERVAL", defaults.tier_review_interval_seconds
            ),
            settlement_interval_seconds=_env_int(
                "SETTLEMENT_INTERVAL", defaults.settlement_interval_seconds
            ),
            log_level=_env("LOG_LEVEL", defaults.log_level) or defaults.log_level,
            identity_keys=_env("IDENTITY_KEYS"),
        )
