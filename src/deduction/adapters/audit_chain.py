"""The audit chain table: written exactly once per event by `ChainWriter`, read by verify."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg import AsyncConnection, Connection, sql

from deduction.application.audit import StoredRecord, TaskStreams
from deduction.application.audit_chain import GENESIS, ChainEntry, Slot, Verdict, digest, verify
from deduction.application.audit_file import ChainedRecord, Exporter
from deduction.projections.base import EVENTS_TABLE
from deduction.projections.runner import (
    CHANNEL,
    PAGE_BYTES,
    SLICE_BYTES,
    page_cut,
    page_slices,
)

log = structlog.get_logger(__name__)
CHAIN_TABLE = "audit_chain"
DDL = [
    f"""
    CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} (
        position bigint PRIMARY KEY,
        originator_id uuid NOT NULL,
        originator_version bigint NOT NULL,
        digest bytea NOT NULL
    )
    """,
    (
        f"CREATE INDEX IF NOT EXISTS idx_{CHAIN_TABLE}_originator"
        f" ON {CHAIN_TABLE}(originator_id, originator_version)"
    ),
]
_LOCK = 7412011  # one chain writer at a time, across processes
PAGE = 5000
FETCH = 10_000


async def create_chain_table(conn: AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        for statement in DDL:
            await conn.execute(statement)


async def chain_head(conn: AsyncConnection[Any]) -> tuple[int, bytes]:
    cur = await conn.execute(
        f"SELECT position, digest FROM {CHAIN_TABLE} ORDER BY position DESC LIMIT 1"
    )
    row = await cur.fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


async def extend_chain(
    conn: AsyncConnection[Any],
    page: int = PAGE,
    max_bytes: int = PAGE_BYTES,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Chain every event newer than the chain's head, a page per transaction (at most `page`
    events and about `max_bytes` of stored state); returns how many were chained. The head is
    read under the lock, so no event is chained twice. Between slices of a page the event loop
    runs its other work: a page of log batches is not hashed in one step."""
    chained = 0
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            position, previous = await chain_head(conn)
            cur = conn.cursor(binary=True)
            await cur.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state, running"
                " FROM (SELECT notification_id, originator_id, originator_version, topic, state,"
                " octet_length(state) AS size,"
                " sum(octet_length(state)) OVER (ORDER BY notification_id) AS running"
                f" FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id"
                " LIMIT %s) AS page WHERE running - size < %s",
                [position, page, max_bytes],
            )
            stored = await cur.fetchall()
            rows: list[tuple[Any, ...]] = []
            for part in page_slices(stored, page, SLICE_BYTES):
                if rows:
                    await asyncio.sleep(0)  # the loop's other work runs between slices
                for p, oid, version, topic, state, _ in part:
                    previous = digest(previous, p, oid, version, topic, bytes(state))
                    rows.append((p, oid, version, previous))
            async with cur.copy(
                f"COPY {CHAIN_TABLE} (position, originator_id, originator_version, digest)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["bigint", "uuid", "bigint", "bytea"])
                for r in rows:
                    await copy.write_row(r)
        chained += len(rows)
        if on_page is not None and rows:
            on_page(len(rows))
        if not page_cut(stored, page, max_bytes):
            return chained


class ChainWriter:
    """Follows the event store and chains each new event (woken by the store's NOTIFY)."""

    def __init__(self, database_url: str, idle_recheck: float = 1.0) -> None:
        self._url, self._idle = database_url, idle_recheck

    async def setup(self) -> None:
        async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
            await create_chain_table(conn)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until `stop`; a page under way when it is set is rolled back, not half-done."""
        follower = asyncio.create_task(self._follow(stop))
        await stop.wait()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

    async def _follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        await extend_chain(conn)
                        async for _ in conn.notifies(timeout=self._idle, stop_after=1):
                            pass
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("audit_chain.connection_lost", error=str(e))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)


# -- verification (synchronous: a plain loop over two server-side cursors is fastest) --------


def _stream(conn: Connection[Any], name: str, query: str, params: list[Any]) -> Iterator[Any]:
    cur = conn.cursor(name=name, binary=True)
    cur.itersize = FETCH
    cur.execute(query, params)
    yield from cur


def _slots(events: Iterator[Any], entries: Iterator[Any]) -> Iterator[Slot]:
    """Merge events and chain entries by position."""
    e: Any = next(events, None)
    c: Any = next(entries, None)
    while e is not None or c is not None:
        if c is None or (e is not None and e[0] < c[0]):
            yield Slot(e[0], (e[1], e[2], e[3], bytes(e[4])), None)
            e = next(events, None)
        elif e is None or c[0] < e[0]:
            yield Slot(c[0], None, _entry(c))
            c = next(entries, None)
        else:
            yield Slot(e[0], (e[1], e[2], e[3], bytes(e[4])), _entry(c))
            e, c = next(events, None), next(entries, None)


def _entry(c: tuple[Any, ...]) -> ChainEntry:
    previous = None if len(c) < 5 else GENESIS if c[4] is None else bytes(c[4])
    return ChainEntry(c[0], c[1], c[2], bytes(c[3]), previous)


def _locator(conn: Connection[Any]) -> Any:
    def locate(oid: UUID, version: int) -> int | None:
        row = conn.execute(
            f"SELECT position FROM {CHAIN_TABLE} WHERE originator_id = %s"
            " AND originator_version = %s",
            [oid, version],
        ).fetchone()
        return None if row is None else int(row[0])

    return locate


_EVENTS = (
    f"SELECT notification_id, originator_id, originator_version, topic, state"
    f" FROM {EVENTS_TABLE} WHERE notification_id <= %s {{where}} ORDER BY notification_id"
)
_ENTRIES = (
    f"SELECT c.position, c.originator_id, c.originator_version, c.digest{{previous}}"
    f" FROM {CHAIN_TABLE} c WHERE c.position <= %s {{where}} ORDER BY c.position"
)
# The first position in (low, limit] where the store departs from the chain, found by
# PostgreSQL in one merge of both tables: each event is hashed with the digest of the chain
# entry before it (the same layout as application.audit_chain.digest; before the range, the
# newest entry at or below `low`). Where every earlier event agrees with its entry, that
# digest is the one a walk from the start would hold, so the first position found here is the
# first a walk finds; the walk then starts there to name it. Ranges are independent, so a
# store is searched in parts at once, each on a connection of its own.
_FIRST_DEPARTURE = f"""
WITH c AS (
    SELECT position, originator_id, originator_version, digest,
           lag(digest, 1, coalesce((SELECT digest FROM {CHAIN_TABLE} WHERE position <= %(low)s
                                    ORDER BY position DESC LIMIT 1), %(genesis)s::bytea))
               OVER (ORDER BY position) AS previous
    FROM {CHAIN_TABLE} WHERE position > %(low)s AND position <= %(limit)s
), e AS (
    SELECT notification_id, originator_id, originator_version, topic, state
    FROM {EVENTS_TABLE} WHERE notification_id > %(low)s AND notification_id <= %(limit)s
)
SELECT min(coalesce(e.notification_id, c.position))
FROM c FULL JOIN e ON e.notification_id = c.position
WHERE e.notification_id IS NULL OR c.position IS NULL
   OR e.originator_id <> c.originator_id OR e.originator_version <> c.originator_version
   OR pg_catalog.sha256(c.previous || int8send(e.notification_id)
        || int8send(e.originator_version) || uuid_send(e.originator_id)
        || int4send(octet_length(convert_to(e.topic, 'UTF8'))) || convert_to(e.topic, 'UTF8')
        || e.state) <> c.digest
"""
_BEFORE = (
    f"SELECT count(*), max(position), (SELECT digest FROM {CHAIN_TABLE} WHERE position < %s"
    f" ORDER BY position DESC LIMIT 1) FROM {CHAIN_TABLE} WHERE position < %s"
)
_PREVIOUS = (
    f", (SELECT p.digest FROM {CHAIN_TABLE} p WHERE p.position < c.position"
    " ORDER BY p.position DESC LIMIT 1)"
)


Connect = Callable[[], Connection[Any]]
PARTS = 4  # connections a whole-store verify hashes on at once (a backend hashes on one core)


def first_departure(conn: Connection[Any], limit: int, connect: Connect | None = None,
                    parts: int = PARTS) -> int | None:  # fmt: skip
    """The first position up to `limit` where the store may depart from the chain (None:
    none does); inside the caller's REPEATABLE READ transaction. With `connect`, the range is
    searched in `parts` at once, the others on new connections sharing its snapshot."""
    if connect is None or parts < 2:
        return _departure(conn, 0, limit)
    ranges = list(pairwise(limit * i // parts for i in range(parts + 1)))
    exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert exported is not None
    with ThreadPoolExecutor(parts - 1) as pool:
        others = [pool.submit(_departure_elsewhere, connect, exported[0], *r) for r in ranges[1:]]
        found = [_departure(conn, *ranges[0]), *(f.result() for f in others)]
    return min((p for p in found if p is not None), default=None)


def _departure(conn: Connection[Any], low: int, limit: int) -> int | None:
    conn.execute("SET LOCAL enable_hashjoin = off")  # both sides come sorted: merge them
    row = conn.execute(_FIRST_DEPARTURE, {"genesis": GENESIS, "low": low, "limit": limit})
    first = row.fetchone()
    return None if first is None or first[0] is None else int(first[0])


def _departure_elsewhere(connect: Connect, snapshot: str, low: int, limit: int) -> int | None:
    with connect() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
        return _departure(conn, low, limit)


def verify_store(conn: Connection[Any], upto: int | None = None,
                 task: TaskStreams | None = None, connect: Connect | None = None) -> Verdict:  # fmt: skip
    """Check the events up to `upto` (default: the chain's head) against the chain: all of
    them, or only `task`'s (each against the chain entry before it). With `connect`, the
    whole store is hashed in parts at once (`first_departure`)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute(f"SELECT coalesce(max(position), 0) FROM {CHAIN_TABLE}").fetchone()
        head = int(row[0]) if row else 0
        limit = head if upto is None else min(upto, head)
        params: list[Any] = [limit]
        where, previous = "", ""
        if task is not None:
            where, previous = "AND originator_id = ANY(%s)", _PREVIOUS
            params.append(task.all_ids)
        before: tuple[int, int, bytes] = (0, 0, GENESIS)  # entries, last position, digest
        if task is None:  # the whole store: PostgreSQL finds where to start looking
            first = first_departure(conn, limit, connect)
            start = limit + 1 if first is None else first  # the walk starts there
            counted = conn.execute(_BEFORE, [start, start]).fetchone()
            assert counted is not None
            before = (int(counted[0]), int(counted[1] or 0), bytes(counted[2] or GENESIS))
            where = "AND notification_id >= %s"
            params.append(start)
        events = _stream(conn, "audit_events", _EVENTS.format(where=where), params)
        entries = _stream(
            conn,
            "audit_entries",
            _ENTRIES.format(where=where.replace("notification_id", "c.position")
                            .replace("originator_id", "c.originator_id"), previous=previous),
            params,
        )  # fmt: skip
        verdict = verify(_slots(events, entries), _locator(conn), limit, start=before[2])
        if verdict.checked == 0:
            verdict.head_position = before[1]
        verdict.checked += before[0]
        return verdict


def checkpoint(conn: Connection[Any]) -> tuple[int, bytes]:
    """The chain's head: position and digest."""
    row = conn.execute(
        f"SELECT position, digest FROM {CHAIN_TABLE} ORDER BY position DESC LIMIT 1"
    ).fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


# -- export -----------------------------------------------------------------------------------

_EXPORT = (
    f"SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,"
    f" c.digest{_PREVIOUS} FROM {EVENTS_TABLE} e JOIN {CHAIN_TABLE} c"
    " ON c.position = e.notification_id WHERE e.originator_id = ANY(%s)"
    " AND e.notification_id > %s ORDER BY e.notification_id LIMIT %s"
)


async def export_task(conn: AsyncConnection[Any], task: TaskStreams) -> AsyncIterator[bytes]:
    """The export file of a task, line by line: its chained events, then the manifest."""
    exporter = Exporter(task.task_id, await chain_head(conn))
    after = 0
    while True:
        cur = conn.cursor(binary=True)
        await cur.execute(_EXPORT, [task.all_ids, after, PAGE])
        rows = await cur.fetchall()
        for p, oid, version, topic, state, own, previous in rows:
            record = StoredRecord(p, oid, version, topic, bytes(state))
            yield exporter.line(ChainedRecord(record, bytes(previous or GENESIS), bytes(own)))
        if len(rows) < PAGE:
            break
        after = rows[-1][0]
    yield exporter.manifest()
