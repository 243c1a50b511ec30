"""The eventsourcing recorder we use: large writes leave pipeline mode; in-flight saves are timed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import InterfaceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry

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

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        with self._timed():
            if write_size(stored_events) <= PIPELINE_MAX_BYTES:
                return super().insert_events(stored_events, **kwargs)
            return self._insert_without_pipeline(stored_events, **kwargs)

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


def write_size(stored_events: Sequence[StoredEvent]) -> int:
    """About how many bytes a write puts on the wire."""
    return sum(len(e.state) + len(e.topic) + _EVENT_OVERHEAD for e in stored_events)


class EventStoreFactory(PostgresFactory):
    """PostgresFactory with our recorder, and every connection opened with its timeouts."""

    POSTGRES_SESSION_OPTIONS = "POSTGRES_SESSION_OPTIONS"
    application_recorder_class = EventStoreRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        options = self.env.get(self.POSTGRES_SESSION_OPTIONS)
        if options:  # libpq `options`: applied by the server when the session starts
            self.datastore.pool.kwargs["options"] = options
