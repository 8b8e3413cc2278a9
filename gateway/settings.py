"""Settings: read once from the environment into a frozen object. Every default is written here."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_INSTANCE_DIR = "instance"
DEFAULT_INTAKE_SMTP = "127.0.0.1:2525"
# Worker processes (lanes: gateway/worker.py), each taking urgent work first. On SQLite a job spends much
# of its time waiting for the one write lock, its CPU idle: with three, on the peak day (bench/day.py, 30
# contacts/s) a missed caller's first text waited for a free process (taken up p99 0.5-1.0 s after it was
# written, against 0.17-0.28 s with four). On PostgreSQL jobs do not queue for a lock, and a fourth
# process only added CPU contention on two cores (first text p99 0.02-0.3 s later in seven pairs of runs).
SQLITE_WORKERS = 4
POSTGRESQL_WORKERS = 3


def default_workers(database_url: str) -> int:
    return SQLITE_WORKERS if database_url.startswith("sqlite") else POSTGRESQL_WORKERS


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None  # None: the gateway starts an embedded Redis server
    public_base_url: str
    secret_key: str
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base_url: str = DEFAULT_TWILIO_API_BASE_URL
    smtp_url: str | None = None
    metrics_token: str | None = None
    instance_dir: Path = field(default_factory=lambda: Path(DEFAULT_INSTANCE_DIR))
    # Which side answers STOP/START/HELP: "provider" (Twilio's default on long codes) or "gateway".
    keyword_replies: str = "provider"
    # The sweep that re-enqueues durable work Redis may have lost, in seconds.
    sweep_interval: float = 2.0
    # Seconds between passes that compare the provider's call and text logs with the gateway's; 0: off.
    reconcile_interval: float = 300.0
    # A send claimed this long ago with no provider answer is marked unknown, never resent.
    send_claim_timeout: float = 120.0
    # Requests per minute for each API key.
    api_rate_limit: int = 600
    # Lifetime of click-to-call links, in seconds.
    click_to_call_ttl: int = 3600
    # Where the embedded Redis server listens when REDIS_URL is not set.
    embedded_redis_port: int = 6390
    # Number of RQ worker processes `gateway serve` starts.
    workers: int = SQLITE_WORKERS
    # Seconds between a store's number health checks (tracked_numbers/jobs.py); 0 turns them off.
    number_check_interval: float = 86400.0
    # host:port of the ADF e-mail intake (`gateway intake smtp`; `gateway serve` starts it).
    intake_smtp: str = DEFAULT_INTAKE_SMTP
    testing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sandbox(self) -> bool:
        """No Twilio credentials: outbound texts and calls are recorded and shown, not sent."""
        return not (self.twilio_account_sid and self.twilio_auth_token)

    @property
    def webhook_auth_token(self) -> str:
        """The secret webhooks are signed with: the account's auth token, or SECRET_KEY in sandbox mode."""
        return self.twilio_auth_token or self.secret_key

    @property
    def spool_dir(self) -> Path:
        """Where the failsafe keeps webhooks the database could not take while Redis was down too."""
        return self.instance_dir / "spool"

    @property
    def redis_address(self) -> str:
        """REDIS_URL, or the embedded server `gateway serve` starts."""
        return self.redis_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _url(environ: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = environ.get(name, "").strip()
    if not value:
        return default
    if "://" not in value:
        raise SettingsError(f"{name} must be a URL (got {value!r})")
    return value.rstrip("/") if name.endswith("BASE_URL") else value


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number (got {raw!r})") from None


def _host_port(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        return default
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name} must be host:port (got {value!r})")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment of DESIGN.md. Raises SettingsError naming the variable at fault."""
    env = os.environ if environ is None else environ
    instance_dir = Path(env.get("GATEWAY_INSTANCE_DIR", DEFAULT_INSTANCE_DIR)).resolve()
    database_url = _url(env, "DATABASE_URL", None) or f"sqlite:///{instance_dir / 'gateway.sqlite3'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgres://")
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    sid = env.get("TWILIO_ACCOUNT_SID", "").strip() or None
    token = env.get("TWILIO_AUTH_TOKEN", "").strip() or None
    if bool(sid) != bool(token):
        missing = "TWILIO_AUTH_TOKEN" if sid else "TWILIO_ACCOUNT_SID"
        raise SettingsError(f"{missing} is required when the other Twilio credential is set")
    secret_key = env.get("SECRET_KEY", "").strip()
    if not secret_key:
        secret_key = _instance_secret(instance_dir)
    keyword_replies = env.get("GATEWAY_KEYWORD_REPLIES", "provider").strip() or "provider"
    if keyword_replies not in {"provider", "gateway"}:
        raise SettingsError("GATEWAY_KEYWORD_REPLIES must be 'provider' or 'gateway'")
    reconcile_interval = _number(env, "GATEWAY_RECONCILE_INTERVAL", 300.0)
    if reconcile_interval < 0:
        raise SettingsError("GATEWAY_RECONCILE_INTERVAL must be 0 (off) or a number of seconds")
    return Settings(
        database_url=database_url,
        redis_url=_url(env, "REDIS_URL", None),
        public_base_url=_url(env, "PUBLIC_BASE_URL", DEFAULT_PUBLIC_BASE_URL) or DEFAULT_PUBLIC_BASE_URL,
        secret_key=secret_key,
        twilio_account_sid=sid,
        twilio_auth_token=token,
        twilio_api_base_url=_url(env, "TWILIO_API_BASE_URL", DEFAULT_TWILIO_API_BASE_URL)
        or DEFAULT_TWILIO_API_BASE_URL,
        smtp_url=_url(env, "SMTP_URL", None),
        metrics_token=env.get("GATEWAY_METRICS_TOKEN") or None,
        instance_dir=instance_dir,
        keyword_replies=keyword_replies,
        sweep_interval=_number(env, "GATEWAY_SWEEP_INTERVAL", 2.0),
        reconcile_interval=reconcile_interval,
        api_rate_limit=int(_number(env, "GATEWAY_API_RATE_LIMIT", 600)),
        embedded_redis_port=int(_number(env, "GATEWAY_REDIS_PORT", 6390)),
        workers=int(_number(env, "GATEWAY_WORKERS", default_workers(database_url))),
        number_check_interval=_number(env, "GATEWAY_NUMBER_CHECK_INTERVAL", 86400.0),
        intake_smtp=_host_port(env, "GATEWAY_INTAKE_SMTP", DEFAULT_INTAKE_SMTP),
    )


def _instance_secret(instance_dir: Path) -> str:
    """No SECRET_KEY: keep a random one in the instance folder so links survive restarts."""
    path = instance_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def settings_for_command() -> Settings:
    """The settings of a `gateway` command: a missing or malformed variable is its error message."""
    try:
        return load_settings()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
