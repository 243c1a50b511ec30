"""CatalogProjection: agent metas, schemes and environment instances."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from deduction.domain import AgentMeta, EnvInstance, Scheme
from deduction.projections import tables
from deduction.projections.base import EventRow, Projection


class CatalogProjection(Projection):
    name = "catalog"
    ddl = tables.CATALOG
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
                        f"INSERT INTO {table} (id, name, config, create_at)"  # noqa: S608
                        " VALUES (%s, %s, %s, %s)",
                        (s[key], s["name"], Jsonb(s["config"]), e.timestamp),
                    )
