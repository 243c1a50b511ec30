"""PostgresEventStreams: the bulk reads a poll makes of the eventsourcing library's Postgres store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application, project_aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from deduction.application.ports import StreamHead

# Every event of the given aggregates, and the newest event of each given log stream
# (a backward index scan of one row per stream, however long the stream is).
_LOAD = """
SELECT false, originator_id, originator_version, topic, state FROM {table}
 WHERE originator_id = ANY(%s)
UNION ALL
SELECT true, e.originator_id, e.originator_version, e.topic, e.state
  FROM unnest(%s::uuid[]) AS s(id) CROSS JOIN LATERAL (
       SELECT originator_id, originator_version, topic, state FROM {table}
        WHERE originator_id = s.id ORDER BY originator_version DESC LIMIT 1) AS e
"""


class _CursorOnly(msgspec.Struct):
    """The one field of a stored LogsReceived event a poll needs (its lines are skipped)."""

    cursor: dict[str, Any] | None = None


_cursor_only = msgspec.json.Decoder(_CursorOnly)


class PostgresEventStreams:
    """One query for a task's aggregates and its log streams' heads, in place of one per
    aggregate and stream; a head's log lines are not decoded when the store keeps plain JSON."""

    def __init__(self, app: Application[UUID]) -> None:
        recorder = app.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            raise TypeError(f"{type(recorder).__name__} is not the PostgreSQL recorder")
        self._datastore, self._mapper = recorder.datastore, app.mapper
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
        self._load_sql = sql.SQL(_LOAD).format(table=table)
        self._plain = app.mapper.cipher is None and app.mapper.compressor is None

    def load(
        self, aggregate_ids: Sequence[UUID], newest_of: Sequence[UUID]
    ) -> tuple[dict[UUID, Any], dict[UUID, StreamHead]]:
        with self._datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(self._load_sql, (list(aggregate_ids), list(newest_of)), prepare=True)
            rows = cur.fetchall()
        history: dict[UUID, list[StoredEvent]] = {}
        heads: dict[UUID, StreamHead] = {}
        for row in rows:
            is_newest, oid, version, topic, state = row.values()
            stored = StoredEvent(oid, version, topic, bytes(state))
            if is_newest:
                heads[oid] = StreamHead(version, self._cursor_of(stored))
            else:
                history.setdefault(oid, []).append(stored)
        to_event = self._mapper.to_domain_event
        aggregates = {
            oid: project_aggregate(None, (to_event(s) for s in
                                          sorted(events, key=lambda s: s.originator_version)))
            for oid, events in history.items()
        }  # fmt: skip
        return aggregates, heads

    def _cursor_of(self, stored: StoredEvent) -> dict[str, Any] | None:
        if self._plain:
            return _cursor_only.decode(stored.state).cursor  # the lines are not decoded
        return getattr(self._mapper.to_domain_event(stored), "cursor", None)


def event_streams_for(app: Application[UUID]) -> PostgresEventStreams | None:
    """The bulk reader when the application stores its events in PostgreSQL."""
    if isinstance(app.recorder, PostgresApplicationRecorder):
        return PostgresEventStreams(app)
    return None
