"""Settings: the only reader of the environment (``RINGFLOW_*``).

Settings are built once, at start-up, and passed down as a value. Nothing else in ringflow reads
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from ringflow.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/ringflow.db"
MIN_SECRET = 32  # characters of RINGFLOW_SECRET_KEY


@dataclasses.dataclass(frozen=True)
class Settings:
    """Deployment configuration. Every field maps to one ``RINGFLOW_<NAME>`` variable."""

    database_url: str = DEFAULT_DATABASE_URL
    # PostgreSQL connections each process keeps open (SQLite always uses one).
    database_pool: int = 10
    redis_url: str | None = None
    data_dir: str = "data"
    public_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    carrier: str = "sandbox"
    sip_trunks: str = ""  # YAML file of trunks (see telephony/sip/trunks.py)
    sip_host: str = "127.0.0.1"  # address the SIP and RTP sockets bind to and advertise
    sip_port: int = 5060
    rtp_port_min: int = 16384
    rtp_port_max: int = 32766
    instance: str = ""
    rate_limit_per_minute: int = 200
    # Failed API logins allowed per minute from one client address, and for one key id, before
    # further attempts get 429 without their credentials being checked.
    auth_failures_per_client: int = 20
    auth_failures_per_key: int = 100
    max_concurrent_calls: int = 20
    queue_limit: int = 1000
    stream_limit: int = 100  # concurrent streams to bots per account (accounts may set their own)
    # Streams one process carries at once, of any account (what bench/streams.py holds on 2 vCPU
    # with its audio on time); 0: no limit.
    streams_per_process: int = 200
    queue_max_age: float = 600.0
    # Seconds a process may stay silent (no heartbeat) before another one finishes the calls it
    # was carrying and gives their lines to queued calls: a process killed without a goodbye.
    instance_lease: float = 60.0
    # Seconds a campaign's driver may stay silent before another process takes the campaign
    # over (a process killed without a goodbye; one that stops hands its campaigns over).
    campaign_lease: float = 15.0
    allow_private_urls: bool = False
    callback_timeout: float = 15.0
    callback_max_attempts: int = 12
    callback_concurrency: int = 64  # callback requests in flight at once, per process
    callback_destination_concurrency: int = 4  # of those, to any one scheme://host:port
    callback_account_concurrency: int = 16  # of those, for any one account (any servers)
    callback_circuit_failures: int = 5  # consecutive timeouts/connection failures: back off
    callback_circuit_cooldown: float = 10.0  # first back-off in seconds; doubles per failed probe
    clock_scale: float = 1.0
    prompt_cache_max_age: float = 7 * 86400.0  # seconds a rendered prompt is kept unused
    prompt_cache_max_mb: int = 2048  # disk for rendered prompts; least recently used go first
    # HTTP connections (per process): see http_connections.py.
    max_connections: int = 1000
    http_head_timeout: float = 10.0  # seconds to receive a request's line and headers
    # Seconds to receive a request's body, in all: counted while the server reads it, not while
    # the app holds it back (waits for an upload slot). Raise it for large uploads on slow links.
    http_body_timeout: float = 30.0
    http_keep_alive: int = 5  # whole seconds an idle keep-alive connection stays open
    log_level: str = "info"
    log_format: str = "text"  # or json: one object a line, with the call's SID on its lines
    # Seconds a SIGTERM lets calls in progress finish (new calls get 503) before the rest are
    # ended, each with its callbacks.
    drain_seconds: float = 30.0
    # Signs expiring recording links; unset: generated once into data_dir/secret_key.
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    # When set, GET /metrics needs "Authorization: Bearer <token>".
    metrics_token: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``RINGFLOW_*`` variables; keyword overrides win (CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"RINGFLOW_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            values[field.name] = _convert(field, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that cannot work, with the variable's name in the message."""
        if self.carrier not in {"sandbox", "sip"}:
            raise ConfigError(
                f"RINGFLOW_CARRIER={self.carrier!r}: supported carriers: sandbox, sip"
            )
        if self.carrier == "sip" and not self.sip_trunks:
            raise ConfigError(
                "RINGFLOW_CARRIER=sip needs RINGFLOW_SIP_TRUNKS (a YAML file of trunks)"
            )
        if not 0 <= self.sip_port < 65536:
            raise ConfigError("RINGFLOW_SIP_PORT must be a UDP port number (0 picks a free one)")
        if not 1024 <= self.rtp_port_min < self.rtp_port_max < 65536:
            raise ConfigError(
                "RINGFLOW_RTP_PORT_MIN and RINGFLOW_RTP_PORT_MAX must be a range of "
                "ports above 1023, the minimum first"
            )
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(
                "RINGFLOW_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        if self.database_pool < 1:
            raise ConfigError("RINGFLOW_DATABASE_POOL must be at least 1")
        if self.rate_limit_per_minute < 1:
            raise ConfigError("RINGFLOW_RATE_LIMIT_PER_MINUTE must be at least 1")
        if self.auth_failures_per_client < 1 or self.auth_failures_per_key < 1:
            raise ConfigError(
                "RINGFLOW_AUTH_FAILURES_PER_CLIENT and RINGFLOW_AUTH_FAILURES_PER_KEY "
                "must be at least 1"
            )
        if self.instance_lease < 1:
            raise ConfigError("RINGFLOW_INSTANCE_LEASE must be at least 1 second")
        if self.campaign_lease < 1:
            raise ConfigError("RINGFLOW_CAMPAIGN_LEASE must be at least 1 second")
        if self.queue_max_age <= 0:
            raise ConfigError("RINGFLOW_QUEUE_MAX_AGE must be a positive number of seconds")
        if self.callback_concurrency < 1:
            raise ConfigError("RINGFLOW_CALLBACK_CONCURRENCY must be at least 1")
        if not 1 <= self.callback_destination_concurrency <= self.callback_concurrency:
            raise ConfigError(
                "RINGFLOW_CALLBACK_DESTINATION_CONCURRENCY must be at least 1 and at most "
                "RINGFLOW_CALLBACK_CONCURRENCY"
            )
        if not 1 <= self.callback_account_concurrency <= self.callback_concurrency:
            raise ConfigError(
                "RINGFLOW_CALLBACK_ACCOUNT_CONCURRENCY must be at least 1 and at most "
                "RINGFLOW_CALLBACK_CONCURRENCY"
            )
        if self.callback_circuit_failures < 1:
            raise ConfigError("RINGFLOW_CALLBACK_CIRCUIT_FAILURES must be at least 1")
        if self.callback_circuit_cooldown <= 0:
            raise ConfigError(
                "RINGFLOW_CALLBACK_CIRCUIT_COOLDOWN must be a positive number of seconds"
            )
        if self.stream_limit < 0:
            raise ConfigError("RINGFLOW_STREAM_LIMIT must be a whole number, 0 or more")
        if self.streams_per_process < 0:
            raise ConfigError("RINGFLOW_STREAMS_PER_PROCESS must be a whole number, 0 or more")
        if self.max_connections < 1:
            raise ConfigError("RINGFLOW_MAX_CONNECTIONS must be at least 1")
        for name in ("http_head_timeout", "http_body_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"RINGFLOW_{name.upper()} must be a positive number of seconds")
        if self.http_keep_alive < 1:
            raise ConfigError(
                "RINGFLOW_HTTP_KEEP_ALIVE must be a whole number of seconds, at least 1"
            )
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"RINGFLOW_LOG_FORMAT={self.log_format!r}: text or json")
        if self.drain_seconds < 0:
            raise ConfigError("RINGFLOW_DRAIN_SECONDS must be 0 or more seconds")
        if self.clock_scale <= 0:
            raise ConfigError("RINGFLOW_CLOCK_SCALE must be positive")
        if self.prompt_cache_max_age <= 0 or self.prompt_cache_max_mb < 1:
            raise ConfigError(
                "RINGFLOW_PROMPT_CACHE_MAX_AGE (seconds) and "
                "RINGFLOW_PROMPT_CACHE_MAX_MB must be positive"
            )
        if self.secret_key is not None and len(self.secret_key) < MIN_SECRET:
            raise ConfigError(
                f"RINGFLOW_SECRET_KEY must be at least {MIN_SECRET} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )

    @property
    def instance_name(self) -> str:
        """A stable name for this process, so a restart can reclaim its own orphaned calls."""
        return self.instance or f"{socket.gethostname()}:{self.port}"

    @property
    def base_url(self) -> str:
        """Where clients reach this server: RINGFLOW_PUBLIC_URL, else http://host:port."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the database is SQLite."""
        prefix = "sqlite+aiosqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :])
        return None


def _convert(field: dataclasses.Field, raw: str) -> object:
    name = f"RINGFLOW_{field.name.upper()}"
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from None
    return raw
