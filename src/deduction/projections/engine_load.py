"""The engine_load read model: the load figures each Engine last reported, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from deduction.domain import EngineLoad
from deduction.projections.base import EventRow, Projection

DDL = [
    """
    CREATE TABLE IF NOT EXISTS engine_load (
        id uuid PRIMARY KEY,
        engine_url text NOT NULL UNIQUE,
        cpu_percent double precision,
        memory_percent double precision,
        sampled_at timestamptz
    )
    """,
]


class EngineLoadProjection(Projection):
    name = "engine_load"
    ddl = DDL
    tables = ("engine_load",)
    events = (EngineLoad.Started, EngineLoad.Sampled)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        async with conn.cursor() as cur:
            for e in events:
                s, key = e.state, UUID(int=e.originator_int)
                if e.name == "EngineLoad.Started":
                    await cur.execute(
                        "INSERT INTO engine_load (id, engine_url) VALUES (%s, %s)"
                        " ON CONFLICT (id) DO NOTHING",
                        (key, s["engine_url"]),
                    )
                else:
                    await cur.execute(
                        "UPDATE engine_load SET cpu_percent = %s, memory_percent = %s,"
                        " sampled_at = %s WHERE id = %s",
                        (s["cpu_percent"], s["memory_percent"],
                         datetime.fromisoformat(s["sampled_at"]), key),
                    )  # fmt: skip


class LoadRow(NamedTuple):
    """An Engine's last figures (None: it offers none) and when they were sampled."""

    cpu_percent: float | None
    memory_percent: float | None
    sampled_at: datetime | None


class EngineLoadView(Protocol):
    async def latest(self, engine_url: str, conn: Any = None) -> LoadRow | None: ...


class PostgresEngineLoadView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def latest(self, engine_url: str, conn: Any = None) -> LoadRow | None:
        """The last sample of this Engine's load; None when none was ever recorded."""
        if conn is not None:
            return await _latest(conn, engine_url)
        async with self._pool.connection() as c:
            return await _latest(c, engine_url)


async def _latest(conn: Any, engine_url: str) -> LoadRow | None:
    cur = await conn.execute(
        "SELECT cpu_percent, memory_percent, sampled_at FROM engine_load WHERE engine_url = %s",
        [engine_url],
    )
    row = await cur.fetchone()
    return LoadRow(*row) if row else None
