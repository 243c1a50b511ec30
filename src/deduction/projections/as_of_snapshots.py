"""The as-of snapshot table (D15): a task's read-model rows after every few of its events,
and the one statement a read as of a position makes of it and of the events after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic
from psycopg_pool import AsyncConnectionPool

from deduction.application.audit import StoredRecord, TaskStreams, streams_of
from deduction.domain import DeductionTask
from deduction.projections.base import EVENTS_TABLE

# Bump when a task or agent handler, or a row's columns, change: snapshots folded by older
# handlers are then ignored (and new ones written beside them).
FOLD_VERSION = 2  # 2: task rows carry priority and priority_rank
SNAPSHOT_TABLE = "as_of_snapshot"
DDL = [
    f"""
    CREATE TABLE IF NOT EXISTS {SNAPSHOT_TABLE} (
        task_id bigint NOT NULL,
        fold_version integer NOT NULL,
        every integer NOT NULL,
        seq bigint NOT NULL,
        position bigint NOT NULL,
        versions bigint[] NOT NULL,
        first_time timestamptz NOT NULL,
        rows bytea NOT NULL,
        PRIMARY KEY (task_id, fold_version, every, seq)
    )
    """
]
# One round trip for a read as of a position: the task's Created event and its newest
# snapshot at or before the position (the row whose originator_id is null), then the task's
# state events after that snapshot, up to the position. Each aggregate's events are one range
# of the primary key, bounded by its versions in the snapshots either side (OFFSET 0 keeps
# the position out of that scan). An execution's aggregate id is UUID(int=execution_id), as
# domain.ids.to_uuid makes it.
_AT_POSITION = f"""
WITH created AS (
    SELECT state FROM {EVENTS_TABLE}
    WHERE originator_id = %(task)s AND originator_version = 1 AND topic = %(created)s
), snapshot AS (
    SELECT seq, position, versions, first_time, rows FROM {SNAPSHOT_TABLE}
    WHERE task_id = %(task_id)s AND fold_version = %(fold)s AND every = %(every)s
), base AS (
    SELECT * FROM snapshot WHERE position <= %(upto)s ORDER BY seq DESC LIMIT 1
), after AS (
    SELECT versions FROM snapshot WHERE position > %(upto)s ORDER BY seq LIMIT 1
), ids AS (
    SELECT %(task)s::uuid AS id, 1::bigint AS n FROM created
    UNION ALL
    SELECT lpad(to_hex(x::bigint), 32, '0')::uuid, n + 1 FROM created,
        json_array_elements_text(convert_from(state, 'UTF8')::json -> 'execution_ids')
        WITH ORDINALITY AS a(x, n)
)
SELECT coalesce(b.position, 0), NULL::uuid, coalesce(b.seq, 0), NULL::text, b.rows,
       b.versions, b.first_time, c.state
FROM created c LEFT JOIN base b ON true
UNION ALL
SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
       NULL, NULL, NULL
FROM ids LEFT JOIN base b ON true LEFT JOIN after a ON true CROSS JOIN LATERAL (
    SELECT * FROM {EVENTS_TABLE} WHERE originator_id = ids.id
    AND originator_version > coalesce(b.versions[ids.n], 0)
    AND originator_version <= coalesce(a.versions[ids.n], {2**63 - 1})
    OFFSET 0
) e
WHERE e.notification_id <= %(upto)s
ORDER BY 1
"""
_TASK_CREATED = get_topic(DeductionTask.Created)
_TASK_CREATED = get_topic(DeductionTask.Created)


@dataclass(frozen=True)
class Snapshot:
    """The task's rows after its first `seq` state events (a multiple of the interval)."""

    seq: int
    position: int  # of the seq-th event
    versions: tuple[int, ...]  # each state aggregate's version then (TaskStreams.state_ids order)
    first_time: datetime  # the earliest timestamp of the events since the previous snapshot
    rows: bytes | None = None  # msgpack [task row, agent rows]; None until loaded


class PostgresSnapshots:
    """The snapshot table, read and written over the API's pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], every: int) -> None:
        self._pool, self.every = pool, every
        self._key = "task_id = %s AND fold_version = %s AND every = %s"

    async def index(self, task_id: int) -> list[Snapshot]:
        """The task's snapshots without their rows, oldest first, up to the first gap."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT seq, position, versions, first_time FROM {SNAPSHOT_TABLE}"
                f" WHERE {self._key} ORDER BY seq",
                [task_id, FOLD_VERSION, self.every],
                prepare=True,
            )
            rows = await cur.fetchall()
        whole: list[Snapshot] = []
        for r in rows:
            if r[0] != (len(whole) + 1) * self.every:
                break  # one went missing: the spans after it are not known
            whole.append(Snapshot(r[0], r[1], tuple(r[2]), r[3]))
        return whole

    async def at_position(
        self, task_id: int, upto: int
    ) -> tuple[TaskStreams, Snapshot | None, list[StoredRecord]] | None:
        """The task's aggregates, its newest snapshot at or before `upto` and its state
        events after that snapshot up to `upto`, in one statement; None: no such task."""
        params = {"task": DeductionTask.create_id(task_id), "created": _TASK_CREATED,
                  "task_id": task_id, "upto": upto, "fold": FOLD_VERSION,
                  "every": self.every}  # fmt: skip
        async with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
            await cur.execute(_AT_POSITION, params, prepare=True)
            rows = await cur.fetchall()
        head = next((r for r in rows if r[1] is None), None)
        if head is None:
            return None
        base = None if head[4] is None else Snapshot(
            head[2], head[0], tuple(head[5]), head[6], bytes(head[4])
        )  # fmt: skip
        events = [StoredRecord(*r[:5]) for r in rows if r[1] is not None]
        return streams_of(task_id, bytes(head[7])), base, events

    async def rows(self, task_id: int, snapshot: Snapshot) -> Snapshot:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT rows FROM {SNAPSHOT_TABLE} WHERE {self._key} AND seq = %s",
                [task_id, FOLD_VERSION, self.every, snapshot.seq],
                prepare=True,
            )
            row = await cur.fetchone()
        if row is None:  # removed meanwhile: fold from the start
            return Snapshot(0, 0, (), snapshot.first_time, None)
        return Snapshot(snapshot.seq, snapshot.position, snapshot.versions,
                        snapshot.first_time, bytes(row[0]))  # fmt: skip

    async def save(self, task_id: int, snapshots: Sequence[Snapshot]) -> None:
        if not snapshots:
            return
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {SNAPSHOT_TABLE} (task_id, fold_version, every, seq, position,"
                " versions, first_time, rows) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                [
                    [task_id, FOLD_VERSION, self.every, s.seq, s.position, list(s.versions)]
                    + [s.first_time, s.rows]
                    for s in snapshots
                ],
            )
