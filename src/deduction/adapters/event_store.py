"""The eventsourcing library's PostgreSQL store, as this service uses it: the one place that
knows the library's recorder internals.

- `EventStoreRecorder` / `EventStoreFactory` (chosen by PERSISTENCE_MODULE): large writes
  leave pipeline mode, saves under way are timed, every connection gets its timeouts.
- `PostgresEventStreams`: the bulk reads a poll makes (the application's EventStreams port).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import InterfaceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry
from psycopg import sql

from deduction.adapters.postgres import KEEPALIVES, SweepingCheck
from deduction.application.ports import StreamHead

# psycopg's pipeline stops flushing once its last command is queued and then waits to read:
# whatever the socket did not take stays in libpq's buffer, and the server waits for it
# (ClientRead) while holding the events table lock (docs/decisions.md D10). A Unix socket
# takes about 200 KiB; writes above this bound go over the plain protocol, which flushes all.
PIPELINE_MAX_BYTES = 64 * 1024
_EVENT_OVERHEAD = 64  # originator id, version and topic, roughly, per event


class EventStoreRecorder(PostgresApplicationRecorder):
    """The library's application recorder, minus the pipeline for large writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: dict[int, float] = {}
        self._in_flight_lock = threading.Lock()

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._timed():
            ids: Sequence[int] | None
            if write_size(stored_events) <= PIPELINE_MAX_BYTES:
                ids = super().insert_events(stored_events, **kwargs)
            else:
                ids = self._insert_without_pipeline(stored_events, **kwargs)
            return ids

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's statements (lock, notify, insert), the rows sent as four arrays in
        binary: the library's array of a composite type is dumped as text by psycopg in
        Python, escaping every byte of every event's state (a fifth of a poll's CPU)."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self._insert_arrays, _columns(stored_events), prepare=True)

    @cached_property
    def _insert_arrays(self) -> sql.Composed:
        return sql.SQL(_INSERT).format(
            table=sql.Identifier(self.datastore.schema, self.events_table_name),
            id_type=sql.SQL(self.datastore.originator_id_type),
        )

    @retry(InterfaceError, max_attempts=3, wait=0.2)  # a dropped connection, not a timeout
    def _insert_without_pipeline(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The same statements as the pipelined path (lock, notify, insert), one at a time."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)

    @contextmanager
    def _timed(self) -> Iterator[None]:
        key = threading.get_ident()
        with self._in_flight_lock:
            self._in_flight[key] = time.monotonic()
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight.pop(key, None)

    def oldest_save_age(self) -> float:
        """Seconds the oldest save still under way has been running (0 when none is)."""
        with self._in_flight_lock:
            oldest = min(self._in_flight.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest


# The library's insert (ids returned in the rows' order), from four arrays sent in binary.
_INSERT = """
INSERT INTO {table} AS t (originator_id, originator_version, topic, state)
SELECT * FROM unnest(%b::{id_type}[], %b::int8[], %b::text[], %b::bytea[])
RETURNING notification_id
"""


def _columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


def write_size(stored_events: Sequence[StoredEvent]) -> int:
    """About how many bytes a write puts on the wire."""
    return sum(len(e.state) + len(e.topic) + _EVENT_OVERHEAD for e in stored_events)


class EventStoreFactory(PostgresFactory):
    """PostgresFactory with our recorder, and every connection opened with its timeouts and
    TCP keepalives."""

    POSTGRES_SESSION_OPTIONS = "POSTGRES_SESSION_OPTIONS"
    application_recorder_class = EventStoreRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)  # the library's pool takes a plain dict here
        options = self.env.get(self.POSTGRES_SESSION_OPTIONS)
        if options:  # libpq `options`: applied by the server when the session starts
            kwargs["options"] = options
        for name, value in KEEPALIVES.items():
            kwargs.setdefault(name, value)
        pool = self.datastore.pool
        if pool._check is not None:  # POSTGRES_PRE_PING: a dead one makes us check them all
            sweep = SweepingCheck()
            sweep.pool = pool
            pool._check = sweep


# Each part is a lateral subquery with an ORDER BY, which PostgreSQL keeps as an index scan per
# stream: written as a join, a store whose log streams are long (the planner then expects
# hundreds of events per id) was read by a hash join over a sequential scan of the whole
# events table, on every poll (45 ms a poll at 190,000 events, growing with the store).

# Every event of the given aggregates, and the newest event of each given log stream
# (a backward index scan of one row per stream, however long the stream is).
_LOAD = """
SELECT false, e.originator_id, e.originator_version, e.topic, e.state
  FROM unnest(%s::uuid[]) AS s(id) CROSS JOIN LATERAL (
       SELECT originator_id, originator_version, topic, state FROM {table}
        WHERE originator_id = s.id ORDER BY originator_version) AS e
UNION ALL
SELECT true, e.originator_id, e.originator_version, e.topic, e.state
  FROM unnest(%s::uuid[]) AS s(id) CROSS JOIN LATERAL (
       SELECT originator_id, originator_version, topic, state FROM {table}
        WHERE originator_id = s.id ORDER BY originator_version DESC LIMIT 1) AS e
"""


# The events after a version of each given aggregate, and the newest event of each given log
# stream when it is past a version: nothing at all when nothing was saved since.
_AFTER = """
SELECT false, e.originator_id, e.originator_version, e.topic, e.state
  FROM unnest(%s::uuid[], %s::int8[]) AS s(id, v) CROSS JOIN LATERAL (
       SELECT originator_id, originator_version, topic, state FROM {table}
        WHERE originator_id = s.id AND originator_version > s.v
        ORDER BY originator_version) AS e
UNION ALL
SELECT true, e.originator_id, e.originator_version, e.topic, e.state
  FROM unnest(%s::uuid[], %s::int8[]) AS s(id, v) CROSS JOIN LATERAL (
       SELECT originator_id, originator_version, topic, state FROM {table}
        WHERE originator_id = s.id AND originator_version > s.v
        ORDER BY originator_version DESC LIMIT 1) AS e
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
        self._after_sql = sql.SQL(_AFTER).format(table=table)
        self._plain = app.mapper.cipher is None and app.mapper.compressor is None

    def load(
        self, aggregate_ids: Sequence[UUID], newest_of: Sequence[UUID]
    ) -> tuple[dict[UUID, Any], dict[UUID, StreamHead]]:
        history, heads = self._read(self._load_sql, (list(aggregate_ids), list(newest_of)))
        aggregates = {oid: _project(None, events) for oid, events in history.items()}
        return aggregates, heads

    def read_after(
        self, versions: Mapping[UUID, int], heads_after: Mapping[UUID, int]
    ) -> tuple[dict[UUID, list[Any]], dict[UUID, StreamHead]]:
        params = (list(versions), list(versions.values()),
                  list(heads_after), list(heads_after.values()))  # fmt: skip
        history, heads = self._read(self._after_sql, params)
        return {oid: list(events) for oid, events in history.items()}, heads

    def _read(
        self, query: sql.Composed, params: tuple[Any, ...]
    ) -> tuple[dict[UUID, Iterator[Any]], dict[UUID, StreamHead]]:
        """Domain events per aggregate (oldest first), and the heads of log streams."""
        with self._datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, params, prepare=True)
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
        events: dict[UUID, Iterator[Any]] = {
            oid: map(to_event, sorted(stored, key=lambda s: s.originator_version))
            for oid, stored in history.items()
        }
        return events, heads

    def _cursor_of(self, stored: StoredEvent) -> dict[str, Any] | None:
        if self._plain:
            return _cursor_only.decode(stored.state).cursor  # the lines are not decoded
        return getattr(self._mapper.to_domain_event(stored), "cursor", None)


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate`, without its protocol check on every event (a
    runtime Protocol's isinstance costs more than applying the event)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def event_streams_for(app: Application[UUID]) -> PostgresEventStreams | None:
    """The bulk reader when the application stores its events in PostgreSQL."""
    if isinstance(app.recorder, PostgresApplicationRecorder):
        return PostgresEventStreams(app)
    return None
