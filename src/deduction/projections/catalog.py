"""The catalog read model: agent metas, schemes and environment instances, and their queries."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from deduction.domain import AgentMeta, EnvInstance, Scheme
from deduction.projections.base import EventRow, Projection, Row, fetch_all, fetch_scalar

DDL = [
    """
    CREATE TABLE IF NOT EXISTS catalog_agent_meta (
        id bigint PRIMARY KEY,
        name varchar(64) NOT NULL,
        load varchar(128) NOT NULL,
        description varchar(512),
        create_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog_scheme (
        id bigint PRIMARY KEY,
        name varchar(128) NOT NULL,
        config jsonb NOT NULL,
        create_at timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS catalog_env_instance (
        id bigint PRIMARY KEY,
        name varchar(128) NOT NULL,
        config jsonb NOT NULL,
        create_at timestamptz NOT NULL
    )
    """,
]

Kind = Literal["agent_meta", "scheme", "env_instance"]
# Each kind's table and what readers see of an entry, in the order the API answers with.
READ_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "agent_meta": ("id", "name", "load", "description", "create_at"),
    "scheme": ("id", "name", "config", "create_at"),
    "env_instance": ("id", "name", "config", "create_at"),
}
TABLES: dict[Kind, str] = {
    "agent_meta": "catalog_agent_meta",
    "scheme": "catalog_scheme",
    "env_instance": "catalog_env_instance",
}


class CatalogProjection(Projection):
    name = "catalog"
    ddl = DDL
    tables = ("catalog_agent_meta", "catalog_scheme", "catalog_env_instance")
    events = (AgentMeta.Created, Scheme.Created, EnvInstance.Created)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        async with conn.cursor() as cur:
            for e in events:
                s = e.state
                if e.name == "AgentMeta.Created":
                    await cur.execute(
                        "INSERT INTO catalog_agent_meta (id, name, load, description, create_at)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (s["meta_id"], s["name"], s["load"], s["description"], e.timestamp),
                    )
                else:
                    table, key = (
                        ("catalog_scheme", "scheme_id")
                        if e.name == "Scheme.Created"
                        else ("catalog_env_instance", "env_instance_id")
                    )
                    await cur.execute(
                        f"INSERT INTO {table} (id, name, config, create_at)"
                        " VALUES (%s, %s, %s, %s)",
                        (s[key], s["name"], Jsonb(s["config"]), e.timestamp),
                    )


class CatalogView(Protocol):
    """The queries the API makes of the catalog tables."""

    async def entry(self, kind: Kind, entry_id: int) -> Row | None: ...

    async def page(self, kind: Kind, page: int, size: int) -> tuple[int, list[Row]]: ...


def _select(kind: Kind) -> sql.Composable:
    columns = sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS[kind]))
    return sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(TABLES[kind]))


class PostgresCatalogView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def entry(self, kind: Kind, entry_id: int) -> Row | None:
        query = sql.SQL("{} WHERE id = %s").format(_select(kind))
        async with self._pool.connection() as conn:
            rows = await fetch_all(conn, query, [entry_id])
        return rows[0] if rows else None

    async def page(self, kind: Kind, page: int, size: int) -> tuple[int, list[Row]]:
        """In id order: catalog ids are chosen by whoever registers the entry."""
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLES[kind]))
        query = sql.SQL("{} ORDER BY id LIMIT %s OFFSET %s").format(_select(kind))
        async with self._pool.connection() as conn:
            total = await fetch_scalar(conn, count)
            rows = await fetch_all(conn, query, [size, (page - 1) * size])
        return int(total), rows
