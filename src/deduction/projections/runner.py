"""Runs projections: a page of events per transaction, woken by NOTIFY, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from deduction.projections import as_of_snapshots, dead_letters
from deduction.projections.agents import AgentProjection
from deduction.projections.base import EVENTS_TABLE, Projection, event_row
from deduction.projections.catalog import CatalogProjection
from deduction.projections.engine_load import EngineLoadProjection
from deduction.projections.history import HistoryProjection
from deduction.projections.logs import LogProjection
from deduction.projections.tasks import TaskProjection
from deduction.projections.tokens import TokenProjection

log = structlog.get_logger(__name__)

CHANNEL = "deduction_events"  # the library NOTIFYs this channel on every insert
# After each page: "<projection>:<position>", every event up to it applied (or not its topic).
READ_MODELS_CHANNEL = "deduction_read_models"
TRACKING = """
CREATE TABLE IF NOT EXISTS projection_tracking (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


def all_projections() -> list[Projection]:
    return [
        TaskProjection(),
        AgentProjection(),
        LogProjection(),
        HistoryProjection(),
        CatalogProjection(),
        TokenProjection(),
        EngineLoadProjection(),
    ]


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    parked: int = 0  # events it could not apply, waiting for retry or skip

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


async def create_read_tables(conn: AsyncConnection[Any], projections: Sequence[Projection]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7412001)")  # concurrent start-ups
        await conn.execute(TRACKING)
        await conn.execute(dead_letters.DDL)
        for statement in as_of_snapshots.DDL:
            await conn.execute(statement)
        for p in projections:
            for statement in p.ddl:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO projection_tracking (name) VALUES (%s) ON CONFLICT DO NOTHING",
                [p.name],
            )


PAGE_BYTES = 8 * 1024 * 1024
"""Most stored event bytes one page reads (always at least one event): a page of large events
(log batches of long lines) is cut short rather than held whole in memory."""

SLICE_BYTES = 256 * 1024
SLICE_EVENTS = 200
"""A page is decoded and applied at most this much at a time, and the event loop runs its other
work (requests, the other projections' pages) between slices: one step of a page of log lines
never holds a process's loop for long (a whole 8 MiB page took 100-600 ms under log load)."""


@dataclass(frozen=True)
class Page:
    applied: int  # events applied by this call
    position: int  # the projection's recorded position afterwards
    checked: int  # every event up to here is applied or not for this projection
    announced: bool = False  # its position was already NOTIFYed on READ_MODELS_CHANNEL
    full: bool = False  # cut at the page size or the byte budget: more may follow at once


async def run_page(
    conn: AsyncConnection[Any],
    projection: Projection,
    page_size: int,
    *,
    record_empty: bool = True,
    max_bytes: int = PAGE_BYTES,
    slice_events: int = SLICE_EVENTS,
    slice_bytes: int = SLICE_BYTES,
) -> Page:
    """Apply the next page of `projection`'s events and move its position, in one transaction.

    The position row is locked before applying, so two runners never apply the same
    page; a crash before COMMIT applies nothing. Finding no matching events takes no
    lock and no transaction; the position then moves only when `record_empty`, and only
    from where it was read (a rebuild may have reset it meanwhile).

    A page that cannot be applied whole is rolled back and applied again event by event,
    each in a savepoint: those that fail alone are parked as dead letters and the position still moves, so
    one bad event never stops the projection or the commands waiting on it.
    """
    topics = projection.topics()
    position, head, stored, full = await _first_look(
        conn, projection.name, topics, page_size, max_bytes
    )
    if head <= position:
        return Page(0, position, position)
    if not stored:
        if not record_empty:
            return Page(0, position, head)
        # No matching event in (position, head]: true whoever moved the position since,
        # but only a position still equal to the one read may jump to `head`; a rebuild's
        # reset, or another runner's progress, wins.
        cur = await conn.execute(
            "UPDATE projection_tracking SET position = %s, updated_at = now()"
            " WHERE name = %s AND position = %s",
            [head, projection.name, position],
            prepare=True,
        )
        return Page(0, head, head) if cur.rowcount else Page(0, position, position)
    try:
        return await _apply_in_transaction(
            conn, projection, position, head, (stored, full), (page_size, max_bytes),
            slices=(slice_events, slice_bytes),
        )  # fmt: skip
    except dead_letters.TRANSIENT:
        raise
    except Exception:  # noqa: BLE001 - nothing was kept: find the event at fault, apply the others
        return await _apply_in_transaction(
            conn, projection, position, head, (stored, full), (page_size, max_bytes),
            one_by_one=True,
        )  # fmt: skip


async def _apply_in_transaction(
    conn: AsyncConnection[Any],
    projection: Projection,
    position: int,
    head: int,
    page: tuple[list[tuple[Any, ...]], bool],
    bounds: tuple[int, int],
    *,
    one_by_one: bool = False,
    slices: tuple[int, int] = (SLICE_EVENTS, SLICE_BYTES),
) -> Page:
    """Lock the position, apply `stored` (read again if the position moved meanwhile),
    record the new position and announce it on READ_MODELS_CHANNEL, in one transaction.

    The page is applied whole, with no savepoint (the common case costs no extra round
    trips); when it fails, the transaction is rolled back and the caller comes back with
    `one_by_one`, which applies each event in a savepoint and parks those that fail alone."""
    topics = projection.topics()
    (stored, full), (page_size, max_bytes) = page, bounds
    async with conn.transaction():
        locked, _ = await _position_and_head(conn, projection.name, lock=True)
        if locked != position:  # another runner applied pages meanwhile: read again
            position = locked
            stored, full = await _matching(conn, topics, position, head, page_size, max_bytes)
        if not stored:
            applied = 0
        elif one_by_one:
            applied = await dead_letters.apply_one_by_one(conn, projection, stored, topics)
        else:
            applied = 0
            for part in page_slices(stored, *slices):
                if applied:
                    await asyncio.sleep(0)  # the loop's other work runs between slices
                await projection.apply(conn, [event_row(r, topics) for r in part])
                applied += len(part)
        # Inserts are serialised by the event store's table lock, so every id up to the
        # visible maximum is committed: a position may safely jump to it.
        new_position = stored[-1][0] if full else max(head, position)
        await conn.execute(  # the NOTIFY is delivered at COMMIT, with the rows it announces
            "WITH moved AS (UPDATE projection_tracking SET position = %s, updated_at = now()"
            " WHERE name = %s RETURNING name, position)"
            " SELECT pg_notify(%s, name || ':' || position) FROM moved",
            [new_position, projection.name, READ_MODELS_CHANNEL],
            prepare=True,
        )
        return Page(applied, new_position, new_position, announced=True, full=full)


async def _matching(
    conn: AsyncConnection[Any],
    topics: dict[str, str],
    after: int,
    upto: int,
    limit: int,
    max_bytes: int,
) -> tuple[list[tuple[Any, ...]], bool]:
    """The next events of these topics, at most `limit` and about `max_bytes` of stored state
    (the event that crosses the budget is the last; the first is always read); and whether
    the page was cut, so more may follow at once. Sizes come from the rows' headers
    (octet_length does not read a stored value), so the events past the cut are not read."""
    cur = await conn.execute(
        _PAGE.format(after="%s", upto="%s") + " ORDER BY notification_id",
        [after, upto, list(topics), limit, max_bytes],
        prepare=True,
        binary=True,  # the stored state comes as bytes, not as hex text to decode
    )
    rows = await cur.fetchall()
    return rows, page_cut(rows, limit, max_bytes)


# The next events of some topics after `after` up to `upto` (SQL expressions), cut at LIMIT
# and at about a byte budget; the row's last column is the running byte count.
_PAGE = (
    "SELECT notification_id, originator_id, originator_version, topic, state, running"
    " FROM (SELECT notification_id, originator_id, originator_version, topic, state,"
    " octet_length(state) AS size,"
    " sum(octet_length(state)) OVER (ORDER BY notification_id) AS running"
    f" FROM {EVENTS_TABLE} WHERE notification_id > {{after}} AND notification_id <= {{upto}}"
    " AND topic = ANY(%s) ORDER BY notification_id LIMIT %s) AS page"
    " WHERE running - size < %s"
)


def page_slices(
    rows: list[tuple[Any, ...]], most: int, max_bytes: int
) -> Iterator[list[tuple[Any, ...]]]:
    """`rows` (a page, its last column the running byte count) in order, as slices of at most
    `most` events and about `max_bytes` of stored state each (at least one event)."""
    start, since = 0, rows[0][5] - len(rows[0][4]) if rows else 0
    for i, row in enumerate(rows):
        if i > start and (i - start >= most or row[5] - since > max_bytes):
            yield rows[start:i]
            start, since = i, rows[i - 1][5]
    if start < len(rows):
        yield rows[start:]


def page_cut(rows: list[tuple[Any, ...]], limit: int, max_bytes: int) -> bool:
    """Whether a page was cut at its size or its byte budget, so more may follow at once."""
    return len(rows) == limit or (bool(rows) and rows[-1][5] >= max_bytes)


async def _first_look(
    conn: AsyncConnection[Any],
    name: str,
    topics: dict[str, str],
    limit: int,
    max_bytes: int,
) -> tuple[int, int, list[tuple[Any, ...]], bool]:
    """The projection's position, the event store's head and the next page of its events
    after that position (as `_matching` reads it), in one statement and so one snapshot: a
    wake-up of a projection with nothing to apply costs one round trip, not two."""
    cur = await conn.execute(
        "SELECT t.position, h.head, p.notification_id, p.originator_id, p.originator_version,"
        " p.topic, p.state, p.running"
        " FROM projection_tracking t"
        f" CROSS JOIN (SELECT coalesce(max(notification_id), 0) AS head FROM {EVENTS_TABLE}) h"
        f" LEFT JOIN LATERAL ({_PAGE.format(after='t.position', upto='h.head')}) p ON true"
        " WHERE t.name = %s ORDER BY p.notification_id",
        [list(topics), limit, max_bytes, name],
        prepare=True,
        binary=True,
    )
    result = await cur.fetchall()
    if not result:
        raise LookupError(f"projection {name!r} has no tracking row")
    position, head = int(result[0][0]), int(result[0][1])
    rows = [r[2:] for r in result if r[2] is not None]
    return position, head, rows, page_cut(rows, limit, max_bytes)


async def _position_and_head(
    conn: AsyncConnection[Any], name: str, *, lock: bool
) -> tuple[int, int]:
    cur = await conn.execute(
        f"SELECT position, (SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE})"
        f" FROM projection_tracking WHERE name = %s{' FOR UPDATE' if lock else ''}",
        [name],
        prepare=True,
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"projection {name!r} has no tracking row")
    return int(row[0]), int(row[1])


async def head_position(conn: AsyncConnection[Any]) -> int:
    """The newest notification id in the event store (0 when empty)."""
    cur = await conn.execute(f"SELECT coalesce(max(notification_id), 0) FROM {EVENTS_TABLE}")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def positions(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute("SELECT name, position FROM projection_tracking")
    return {name: pos for name, pos in await cur.fetchall()}


async def status(conn: AsyncConnection[Any]) -> list[ProjectionStatus]:
    head = await head_position(conn)
    parked = await dead_letters.parked_counts(conn)
    return [
        ProjectionStatus(name, pos, head, parked.get(name, 0))
        for name, pos in sorted((await positions(conn)).items())
    ]


class ProjectionRunner:
    """Keeps the read tables up to date and lets commands wait until they include their events."""

    def __init__(
        self,
        database_url: str,
        projections: Sequence[Projection] | None = None,
        page_size: int = 1000,
        idle_recheck: float = 1.0,
        page_bytes: int = PAGE_BYTES,
    ) -> None:
        self._url = database_url
        self.projections = list(projections or all_projections())
        self._topics = {p.name: frozenset(p.topics()) for p in self.projections}
        self._page_size, self._page_bytes = page_size, page_bytes
        self._idle_recheck = idle_recheck
        self._wakes: dict[str, asyncio.Event] = {}
        self._recorded_at: dict[str, float] = {}
        self._progress = asyncio.Condition()
        self.positions: dict[str, int] = {}
        self.last_error: str | None = None
        # A process that runs no projections reads the tracking rows through its read pool,
        # within its stated connection budget (D16); set once the pool is open.
        self.reads: AsyncConnectionPool[Any] | None = None

    async def setup(self) -> None:
        async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
            await create_read_tables(conn, self.projections)
            self.positions = await positions(conn)

    def kick(self, topics: frozenset[str] = frozenset()) -> None:
        """Something was just saved: the projections that take one of `topics` (every one
        when empty) look for new events now. The others learn of it from the store's NOTIFY;
        waking them too made each command cost a page look per read model."""
        for name, wake in self._wakes.items():
            if not topics or not topics.isdisjoint(self._topics[name]):
                wake.set()

    async def catch_up(self, conn: AsyncConnection[Any]) -> int:
        """Apply every pending page of every projection over one connection."""
        applied = 0
        for p in self.projections:
            applied += await self._catch_up_one(conn, p)
        return applied

    async def _catch_up_one(self, conn: AsyncConnection[Any], projection: Projection) -> int:
        name, applied = projection.name, 0
        while True:
            # An empty check moves the recorded position at most once a second: commands
            # wait on `checked`, so projections without matching events cost no writes.
            now = time.monotonic()
            record_empty = now - self._recorded_at.get(name, 0.0) >= self._idle_recheck
            page = await run_page(conn, projection, self._page_size, record_empty=record_empty,
                                  max_bytes=self._page_bytes)  # fmt: skip
            if page.applied or record_empty:
                self._recorded_at[name] = now
            applied += page.applied
            if page.checked > self.positions.get(name, 0):
                self.positions[name] = page.checked
                async with self._progress:
                    self._progress.notify_all()
                if not page.announced:  # streams in every process follow the read tables by it
                    await conn.execute(
                        "SELECT pg_notify(%s, %s)", [READ_MODELS_CHANNEL, f"{name}:{page.checked}"],
                        prepare=True,
                    )  # fmt: skip
            if not page.full:
                return applied

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the event store until `stop`: one task and connection per projection,
        so a command waits for the slowest projection, not for the sum of them."""
        self._wakes = {p.name: asyncio.Event() for p in self.projections}
        listener = asyncio.create_task(self._listen(stop))
        stopper = asyncio.create_task(self._kick_on(stop))
        try:
            await asyncio.gather(*(self._follow(p, stop) for p in self.projections))
        finally:
            for task in (listener, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _kick_on(self, stop: asyncio.Event) -> None:
        """Wake the idle followers as soon as `stop` is set, so shutdown does not wait."""
        await stop.wait()
        self.kick()

    async def _follow(self, projection: Projection, stop: asyncio.Event) -> None:
        wake = self._wakes[projection.name]
        while not stop.is_set():
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    while not stop.is_set():
                        wake.clear()
                        await self._catch_up_one(conn, projection)
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(wake.wait(), self._idle_recheck)
                self.last_error = None
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self.last_error = str(e)
                log.warning("projections.connection_lost", projection=projection.name, error=str(e))
            except Exception as e:  # a follower never dies: it says why and resumes
                self.last_error = f"{projection.name}: {dead_letters.describe(e)}"
                log.exception("projections.follow_failed", projection=projection.name)
            else:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake every projection on the event store's NOTIFY."""
        while not stop.is_set():
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    async for _ in conn.notifies():
                        self.kick()
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("projections.listen_lost", error=str(e))
                await asyncio.sleep(1.0)

    async def _poll_positions(
        self, position: int, timeout: float, topics: frozenset[str],
        over: AsyncConnection[Any] | None,
    ) -> bool:  # fmt: skip
        """Wait on the tracking rows the runners of other processes move (every 50 ms), read
        over `over` (a connection the caller holds) or one of the read pool, given back
        between reads."""
        deadline = time.monotonic() + timeout
        while True:
            async with self._tracking_reader(over) as conn:
                self.positions = await positions(conn)
            if self.reached(position, topics):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def _tracking_reader(
        self, over: AsyncConnection[Any] | None
    ) -> AsyncIterator[AsyncConnection[Any]]:
        if over is not None:
            yield over
            return
        if self.reads is not None:
            async with self.reads.connection() as conn:
                yield conn
            return
        async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
            yield conn  # no pool (the CLI's short runs)

    def reached(self, position: int, topics: frozenset[str] = frozenset()) -> bool:
        """Every projection that takes one of `topics` (every one when empty) has checked
        the events up to `position`."""
        return bool(self.positions) and all(
            self.positions.get(p.name, 0) >= position
            for p in self.projections
            if not topics or not topics.isdisjoint(self._topics[p.name])
        )

    async def wait_for(
        self, position: int, timeout: float, topics: frozenset[str] = frozenset(),
        over: AsyncConnection[Any] | None = None,
    ) -> bool:  # fmt: skip
        """Wait until the projections taking `topics` (all when empty) include `position`;
        False on timeout. A process that runs no projections reads their tracking rows,
        over `over` when the caller holds a connection (it then takes none of the pool's)."""
        if position <= 0 or self.reached(position, topics):
            return True
        if not self._wakes:  # this process runs no projections (a worker): read their rows
            return await self._poll_positions(position, timeout, topics, over)
        self.kick(topics)
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.reached(position, topics)), timeout
                )
            except TimeoutError:
                return False
        return True


async def rebuild(
    database_url: str,
    names: Sequence[str] | None = None,
    page_size: int = 5000,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, int]:
    """Empty the read tables of the named projections and replay every event into them."""
    chosen = [p for p in all_projections() if not names or p.name in names]
    unknown = set(names or ()) - {p.name for p in chosen}
    if unknown:
        raise LookupError(f"unknown projection(s): {', '.join(sorted(unknown))}")
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create_read_tables(conn, chosen)
        if {p.name for p in chosen} & {TaskProjection.name, AgentProjection.name}:
            # Snapshots are folded by these projections' handlers: rebuilt ones may differ.
            await conn.execute(f"TRUNCATE {as_of_snapshots.SNAPSHOT_TABLE}")
    # Projections are independent: replaying them side by side lets PostgreSQL write one
    # page while Python decodes another.
    counts = await asyncio.gather(
        *(_rebuild_one(database_url, p, page_size, on_progress) for p in chosen)
    )
    return {p.name: n for p, n in zip(chosen, counts)}


async def _rebuild_one(
    database_url: str,
    projection: Projection,
    page_size: int,
    on_progress: Callable[[str, int, int], None] | None,
) -> int:
    applied = 0
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM projection_tracking WHERE name = %s FOR UPDATE", [projection.name]
            )
            await conn.execute(f"TRUNCATE {', '.join(projection.tables)}")
            await dead_letters.forget(conn, projection.name)
            # Bulk load: building secondary indexes once at the end is several times cheaper
            # than maintaining them row by row. A crash before that is mended at the next
            # start-up, which creates every missing index (CREATE INDEX IF NOT EXISTS).
            indexes = await _secondary_indexes(conn, projection.tables)
            for name, _ in indexes:
                await conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            await conn.execute(
                "UPDATE projection_tracking SET position = 0, updated_at = now() WHERE name = %s",
                [projection.name],
            )
        head = await head_position(conn)
        while True:
            # No slices: nothing else waits on a rebuild's loop, and whole pages are cheaper.
            page = await run_page(conn, projection, page_size, slice_events=page_size,
                                  slice_bytes=PAGE_BYTES)  # fmt: skip
            applied += page.applied
            if on_progress:
                on_progress(projection.name, page.position, head)
            if page.position >= head:
                break
        for _, definition in indexes:
            await conn.execute(definition)
    return applied


async def _secondary_indexes(
    conn: AsyncConnection[Any], table_names: Sequence[str]
) -> list[tuple[str, str]]:
    """(name, CREATE statement) of the indexes that back no constraint."""
    cur = await conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i"
        " WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        [list(table_names)],
    )
    return [(name, definition) for name, definition in await cur.fetchall()]
