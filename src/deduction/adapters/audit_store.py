"""The event store as auditors read it (`PostgresEventLog`, the application's EventLog port)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from deduction.application.audit import (
    EventQuery,
    StoredRecord,
    TaskStreams,
    streams_of,
    task_of,
)
from deduction.domain import AgentExecution, DeductionTask
from deduction.projections.base import EVENTS_TABLE

# The event's own time, read from its stored JSON (the transcoder keeps plain JSON).
_TIME = sql.SQL("(convert_from(state, 'UTF8')::json->>'timestamp')::timestamptz")
_NO_BOUND = 2**63 - 1


def event_query(query: EventQuery, table: str = EVENTS_TABLE) -> tuple[sql.Composed, list[Any]]:
    """SELECT of the stored events a query asks for, by position."""
    where: list[sql.Composable] = [sql.SQL("notification_id > %s")]
    params: list[Any] = [query.after]
    if query.upto is not None:
        where.append(sql.SQL("notification_id <= %s"))
        params.append(query.upto)
    if query.aggregate_ids is not None:
        where.append(sql.SQL("originator_id = ANY(%s)"))
        params.append(list(query.aggregate_ids))
    if query.topics is not None:
        where.append(sql.SQL("topic = ANY(%s)"))
        params.append(list(query.topics))
    if query.exclude_topics:
        where.append(sql.SQL("topic <> ALL(%s)"))
        params.append(list(query.exclude_topics))
    if query.start is not None:
        where.append(sql.SQL("{} >= %s").format(_TIME))
        params.append(query.start)
    if query.end is not None:
        where.append(sql.SQL("{} < %s").format(_TIME))
        params.append(query.end)
    limit = sql.SQL("") if query.limit is None else sql.SQL(" LIMIT {}").format(query.limit)
    statement = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE {} ORDER BY notification_id{}"
    ).format(sql.Identifier(table), sql.SQL(" AND ").join(where), limit)
    return statement, params


def record(row: tuple[Any, ...]) -> StoredRecord:
    return StoredRecord(row[0], row[1], row[2], row[3], bytes(row[4]))


class PostgresEventLog:
    """Reads of the events table over the API's read pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], table: str = EVENTS_TABLE) -> None:
        self._pool, self._table = pool, table
        self._created = sql.SQL(
            "SELECT state FROM {} WHERE originator_id = %s AND originator_version = 1"
        ).format(sql.Identifier(table))
        # One index range per aggregate (its primary key), however busy the store around it.
        self._versions = sql.SQL(
            "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS b(id, low, high)"
            " JOIN {} e ON e.originator_id = b.id"
            " AND e.originator_version > b.low AND e.originator_version <= b.high"
            " WHERE e.notification_id <= %s ORDER BY e.notification_id"
        ).format(sql.Identifier(table))
        self._head = sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(
            sql.Identifier(table)
        )

    async def select(self, query: EventQuery) -> list[StoredRecord]:
        statement, params = event_query(query, self._table)
        async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(statement, params)
            return [record(r) for r in await cur.fetchall()]

    async def select_versions(
        self,
        aggregate_ids: Sequence[UUID],
        after: Sequence[int],
        upto: Sequence[int] | None,
        position: int | None,
    ) -> list[StoredRecord]:
        high = list(upto) if upto is not None else [_NO_BOUND] * len(aggregate_ids)
        params = [list(aggregate_ids), list(after), high,
                  _NO_BOUND if position is None else position]  # fmt: skip
        async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(self._versions, params, prepare=True)
            return [record(r) for r in await cur.fetchall()]

    async def _created_of(self, aggregate_id: UUID) -> bytes | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._created, [aggregate_id], prepare=True)
            row = await cur.fetchone()
        return None if row is None else bytes(row[0])

    async def task_streams(self, task_id: int) -> TaskStreams | None:
        created = await self._created_of(DeductionTask.create_id(task_id))
        return None if created is None else streams_of(task_id, created)

    async def execution_task(self, execution_id: int) -> int | None:
        created = await self._created_of(AgentExecution.create_id(execution_id))
        return None if created is None else task_of(created)

    async def head(self) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._head)
            row = await cur.fetchone()
        return int(row[0]) if row else 0
