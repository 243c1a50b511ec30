"""Settings read from the environment (the plan's names); the only reader of os.environ."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    """PostgreSQL URL; unset means: start the embedded server in `data_dir`."""
    data_dir: str = ".data"
    """Where the embedded PostgreSQL keeps its files."""
    redis_url: str | None = None
    """Redis URL for arq workers; unset means: run jobs in-process inside `deduction serve`."""
    worker_queue: str = "deduction:queue"
    """arq queue name; also prefixes job ids, so deployments can share one Redis."""
    engine_url: str = "http://localhost:8080"
    """Base URL of the Engine service."""
    engine_timeout: float = 30.0
    """Seconds allowed for each Engine call."""
    engine_unreachable_deadline: float = 300.0
    """Seconds an Engine may stay unreachable before its running tasks are failed."""
    engine_run_missing_grace: float = 60.0
    """Seconds a task's run may stay unknown to the Engine (404, or another run's agents)
    before the task is failed with the Engine's message."""
    task_poll_interval: float = 5.0
    """Seconds between two polls of every running task."""
    task_poll_enabled: bool = True
    """Switches the periodic poll sweep on or off."""
    log_retention_days: int = 30
    """Log lines of tasks that ended longer ago are removed from the read table."""
    log_batch_size: int = 100
    """Most log lines in one LogsReceived event (1..1000)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = 1_048_576
    """Largest request body accepted (413 beyond)."""
    read_your_writes_timeout: float = 10.0
    """Seconds a command may take in all: waiting for a thread, saving, and waiting for the
    read tables to include its events (503 beyond)."""
    command_threads: int = 8
    """Threads that run API commands; the worker never uses them."""
    poll_threads: int = 4
    """Threads that run the worker's loads and saves (polls, submits); group commit makes
    a few enough. Beyond them, poll work queues (and is shed after 30 s); commands do not."""
    db_statement_timeout: float = 30.0
    """Seconds one event store statement may run before the server cancels it."""
    save_stuck_after: float = 60.0
    """A save running longer than this makes /ready answer 503 (the write path is stuck)."""
    stream_max_subscribers: int = 2000
    """Streams (SSE and WebSocket) one API process serves at once; 503 beyond."""
    stream_queue_size: int = 1000
    """Messages queued for one stream; a client that falls this far behind is sent a resume
    message and disconnected."""
    stream_heartbeat: float = 15.0
    """Seconds of silence after which a stream sends a heartbeat, so proxies keep it open."""
    stream_max_age: float = 900.0
    """Seconds a stream stays open; the client then resumes (perhaps on another process)."""
    as_of_snapshot_every: int = 256
    """A snapshot of a task's rows is kept every this many of its events, so an answer as
    of a moment folds at most this many events onto the snapshot before it."""
    engine_max_running_tasks: int = 0
    """Tasks admitted to the Engine at once (submitted and not ended); 0: no cap. Tasks
    beyond it wait, pending, in priority order (README, "Admission and priorities")."""
    engine_max_running_agents: int = 0
    """Agents of admitted tasks not ended, at once; 0: no cap. A task with more agents than
    the cap is admitted only when nothing else holds a slot."""
    queue_aging: float = 300.0
    """Seconds of waiting that raise a queued task's effective priority by one level, so
    that a stream of high-priority tasks cannot starve the others."""
    engine_max_cpu_percent: float | None = None
    """Submissions wait while the Engine's last reported CPU use is above this (percent);
    unset: not used (nor when the Engine offers no load figures)."""
    engine_max_memory_percent: float | None = None
    """Submissions wait while the Engine's last reported memory use is above this (percent);
    unset: not used."""
    engine_load_sample_interval: float = 60.0
    """Seconds between two recorded samples of the Engine's load (read every sweep); a figure
    that moves by more than ENGINE_LOAD_SAMPLE_DELTA, or crosses a limit, is recorded sooner."""
    engine_load_sample_delta: float = 10.0
    """Points of CPU or memory use a figure must move by to be recorded before the interval."""
    metrics_enabled: bool = True
    """Serve /metrics (Prometheus text format) from the API, and time its requests."""
    metrics_port: int = 0
    """Port on which `deduction worker` serves its own /metrics; 0: none."""
    metrics_host: str = "127.0.0.1"
    """Address a worker's METRICS_PORT listens on."""
    auth_mode: str = "auto"
    """auto: authentication is on when JWT is configured; on: every call needs a token
    (API tokens, and JWT when configured); off: open, even beyond loopback."""
    auth_jwt_secret: str | None = None
    """Shared secret (at least 32 characters) for HS256 JWTs."""
    auth_jwt_jwks_url: str | None = None
    """JWKS URL of the identity provider, for RS256/ES256 JWTs."""
    auth_jwt_issuer: str | None = None
    """The `iss` a JWT must carry (required with JWT)."""
    auth_jwt_audience: str | None = None
    """The `aud` a JWT must carry (required with JWT)."""
    auth_jwt_role_claim: str = "roles"
    """The JWT claim holding the role (a string or a list of strings)."""
    rate_limit_commands: int = 120
    """Commands (POST, PUT) one principal may send per minute; 0: no limit."""
    rate_limit_reads: int = 1200
    """Reads (GET) one principal may send per minute; 0: no limit."""
    cors_allow_origins: str = ""
    """Comma-separated origins browsers may call the API from; empty: none."""
    log_level: str = "INFO"


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "data_dir": "DEDUCTION_DATA_DIR",
    "redis_url": "REDIS_URL",
    "worker_queue": "WORKER_QUEUE",
    "engine_url": "ENGINE_URL",
    "engine_timeout": "ENGINE_TIMEOUT",
    "engine_unreachable_deadline": "ENGINE_UNREACHABLE_DEADLINE",
    "engine_run_missing_grace": "ENGINE_RUN_MISSING_GRACE",
    "task_poll_interval": "TASK_POLL_INTERVAL",
    "task_poll_enabled": "TASK_POLL_ENABLED",
    "log_retention_days": "LOG_RETENTION_DAYS",
    "log_batch_size": "LOG_BATCH_SIZE",
    "api_host": "API_HOST",
    "api_port": "API_PORT",
    "max_body_bytes": "MAX_BODY_BYTES",
    "read_your_writes_timeout": "READ_YOUR_WRITES_TIMEOUT",
    "command_threads": "COMMAND_THREADS",
    "poll_threads": "POLL_THREADS",
    "db_statement_timeout": "DB_STATEMENT_TIMEOUT",
    "save_stuck_after": "SAVE_STUCK_AFTER",
    "stream_max_subscribers": "STREAM_MAX_SUBSCRIBERS",
    "stream_queue_size": "STREAM_QUEUE_SIZE",
    "stream_heartbeat": "STREAM_HEARTBEAT",
    "stream_max_age": "STREAM_MAX_AGE",
    "as_of_snapshot_every": "AS_OF_SNAPSHOT_EVERY",
    "engine_max_running_tasks": "ENGINE_MAX_RUNNING_TASKS",
    "engine_max_running_agents": "ENGINE_MAX_RUNNING_AGENTS",
    "queue_aging": "QUEUE_AGING",
    "engine_max_cpu_percent": "ENGINE_MAX_CPU_PERCENT",
    "engine_max_memory_percent": "ENGINE_MAX_MEMORY_PERCENT",
    "engine_load_sample_interval": "ENGINE_LOAD_SAMPLE_INTERVAL",
    "engine_load_sample_delta": "ENGINE_LOAD_SAMPLE_DELTA",
    "metrics_enabled": "METRICS_ENABLED",
    "metrics_port": "METRICS_PORT",
    "metrics_host": "METRICS_HOST",
    "auth_mode": "AUTH_MODE",
    "auth_jwt_secret": "AUTH_JWT_SECRET",
    "auth_jwt_jwks_url": "AUTH_JWT_JWKS_URL",
    "auth_jwt_issuer": "AUTH_JWT_ISSUER",
    "auth_jwt_audience": "AUTH_JWT_AUDIENCE",
    "auth_jwt_role_claim": "AUTH_JWT_ROLE_CLAIM",
    "rate_limit_commands": "RATE_LIMIT_COMMANDS",
    "rate_limit_reads": "RATE_LIMIT_READS",
    "cors_allow_origins": "CORS_ALLOW_ORIGINS",
    "log_level": "LOG_LEVEL",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from environment variables; empty values count as unset."""
    env = os.environ if environ is None else environ
    raw = {field: env[name] for field, name in _ENV_NAMES.items() if env.get(name)}
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as e:
        field = str(e).rpartition("$.")[2].strip("`")
        name = _ENV_NAMES.get(field, field)
        raise SettingsError(f"{name}={raw.get(field)!r} is not valid: {e}") from None
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 1 <= s.log_batch_size <= 1000:
        raise SettingsError("LOG_BATCH_SIZE must be between 1 and 1000")
    if s.task_poll_interval <= 0:
        raise SettingsError("TASK_POLL_INTERVAL must be positive")
    if s.engine_timeout <= 0:
        raise SettingsError("ENGINE_TIMEOUT must be positive")
    if s.command_threads < 1 or s.poll_threads < 1:
        raise SettingsError("COMMAND_THREADS and POLL_THREADS must be at least 1")
    if s.db_statement_timeout <= 0 or s.save_stuck_after <= 0:
        raise SettingsError("DB_STATEMENT_TIMEOUT and SAVE_STUCK_AFTER must be positive")
    if s.log_retention_days < 0:
        raise SettingsError("LOG_RETENTION_DAYS must not be negative")
    if s.stream_max_subscribers < 1 or s.stream_queue_size < 2:
        raise SettingsError("STREAM_MAX_SUBSCRIBERS must be at least 1, STREAM_QUEUE_SIZE 2")
    if s.as_of_snapshot_every < 1:
        raise SettingsError("AS_OF_SNAPSHOT_EVERY must be at least 1")
    if s.stream_heartbeat <= 0 or s.stream_max_age <= 0:
        raise SettingsError("STREAM_HEARTBEAT and STREAM_MAX_AGE must be positive")
    if s.rate_limit_commands < 0 or s.rate_limit_reads < 0:
        raise SettingsError("RATE_LIMIT_COMMANDS and RATE_LIMIT_READS must not be negative")
    _check_scheduling(s)
    _check_auth(s)


def _check_scheduling(s: Settings) -> None:
    if s.engine_max_running_tasks < 0 or s.engine_max_running_agents < 0:
        raise SettingsError("ENGINE_MAX_RUNNING_TASKS and ENGINE_MAX_RUNNING_AGENTS must not be"
                            " negative (0: no cap)")  # fmt: skip
    if s.queue_aging <= 0:
        raise SettingsError("QUEUE_AGING must be positive")
    for name, limit in (("ENGINE_MAX_CPU_PERCENT", s.engine_max_cpu_percent),
                        ("ENGINE_MAX_MEMORY_PERCENT", s.engine_max_memory_percent)):  # fmt: skip
        if limit is not None and not 0 <= limit <= 100:
            raise SettingsError(f"{name} must be between 0 and 100 (unset: not used)")
    if s.engine_load_sample_interval <= 0 or s.engine_load_sample_delta < 0:
        raise SettingsError("ENGINE_LOAD_SAMPLE_INTERVAL must be positive,"
                            " ENGINE_LOAD_SAMPLE_DELTA not negative")  # fmt: skip
    if not 0 <= s.metrics_port <= 65535:
        raise SettingsError("METRICS_PORT must be a port number (0: no worker metrics)")


def _check_auth(s: Settings) -> None:
    if s.auth_mode not in AUTH_MODES:
        raise SettingsError(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}")
    if s.auth_jwt_secret and s.auth_jwt_jwks_url:
        raise SettingsError("set AUTH_JWT_SECRET or AUTH_JWT_JWKS_URL, not both")
    if s.auth_jwt_secret is not None and len(s.auth_jwt_secret) < 32:
        raise SettingsError("AUTH_JWT_SECRET must be at least 32 characters")
    if jwt_configured(s) and not (s.auth_jwt_issuer and s.auth_jwt_audience):
        raise SettingsError("JWT needs AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE")


AUTH_MODES = ("auto", "on", "off")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def jwt_configured(s: Settings) -> bool:
    return bool(s.auth_jwt_secret or s.auth_jwt_jwks_url)


def auth_enabled(s: Settings) -> bool:
    """Whether callers must present a token (API token or JWT)."""
    return s.auth_mode == "on" or (s.auth_mode == "auto" and jwt_configured(s))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def check_exposure(s: Settings) -> None:
    """Refuse to serve an open API beyond loopback (as Redis' protected mode does)."""
    if auth_enabled(s) or s.auth_mode == "off" or is_loopback(s.api_host):
        return
    raise SettingsError(
        f"API_HOST={s.api_host} is not a loopback address and no authentication is configured:"
        " set AUTH_MODE=on (API tokens: `deduction tokens create`), or AUTH_JWT_SECRET /"
        " AUTH_JWT_JWKS_URL with AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE, or AUTH_MODE=off to"
        " serve it open on purpose"
    )


def cors_origins(s: Settings) -> list[str]:
    return [o.strip() for o in s.cors_allow_origins.split(",") if o.strip()]


def data_path(s: Settings) -> Path:
    return Path(s.data_dir).expanduser().resolve()
