"""One LISTEN connection per process: follows the read tables and fans changes out to streams.

The projection runners of every process NOTIFY the position each read model reached;
the hub's watermark is the lowest of the four a stream shows, so everything up to it is
readable. Each advance is read once, for every subscribed task together, and queued to
each subscriber; a subscriber whose queue is full is told where to resume and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from deduction.adapters.http.stream_messages import (
    LAST_RANK,
    Frame,
    format_token,
    frame,
    resume_frame,
    token,
)
from deduction.application.services import ServiceBusyError
from deduction.projections.changes import Change, ChangePage, ChangeView
from deduction.projections.runner import READ_MODELS_CHANNEL, positions

log = structlog.get_logger(__name__)
SHOWN = ("tasks", "agents", "logs", "history")  # the read models a stream shows
RowStatus = tuple[str, str | None] | None  # a task row's status and the one before it


class StreamsFullError(ServiceBusyError):
    """This process already serves its most subscribers (503)."""


@dataclass(eq=False, slots=True, weakref_slot=True)
class Subscriber:
    """One open stream: a task's (or, with task_id None, the board's), and the messages queued
    for it. A fan-out appends to `pending` and wakes the stream, which takes them all at once."""

    task_id: int | None
    min_level: int
    status: str | None
    pending: list[Frame] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None  # set while the stream waits for messages
    last: str = "0"  # token of the newest message queued or sent
    dropped: bool = False
    closed: bool = False
    release: weakref.finalize[Any, Any] | None = None

    def wants(self, row_status: RowStatus) -> bool:
        if self.status is None or row_status is None:
            return True
        return self.status in row_status  # a board filter also sees the tasks that leave it

    def offer(self, f: Frame, limit: int) -> None:
        if self.dropped:
            return
        if len(self.pending) >= limit - 1:  # the last place is for the resume message
            self.pending.append(resume_frame(self.last, "the client reads too slowly"))
            self.dropped = True
        else:
            self.pending.append(f)
            self.last = f.token
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class StreamHub:
    def __init__(
        self, database_url: str, changes: ChangeView, max_subscribers: int, queue_size: int
    ) -> None:
        self._url, self.changes = database_url, changes
        self._max, self.queue_size = max_subscribers, queue_size
        self._tasks: dict[int, set[Subscriber]] = {}
        self._board: set[Subscriber] = set()
        self._count = 0
        self._positions: dict[str, int] = {}
        self.fetched = 0  # every change up to here was queued to the subscribers then open
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # a subscriber joins between two fan-outs, never during one
        self._jobs: list[asyncio.Task[None]] = []

    @property
    def subscribers(self) -> int:
        return self._count

    def watermark(self) -> int:
        return min((self._positions.get(n, 0) for n in SHOWN), default=0)

    async def start(self) -> None:
        self._jobs = [asyncio.create_task(self._listen()), asyncio.create_task(self._pump())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        for job in self._jobs:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

    def open(self, task_id: int | None, min_level: int, status: str | None) -> Subscriber:
        if self._count >= self._max:
            raise StreamsFullError(f"this server already serves {self._max} streams; retry later")
        self._count += 1
        sub = Subscriber(task_id, min_level, status)
        # A response dropped before its stream ever ran (the client left at once) never calls
        # close(): its place is freed when the subscriber is collected.
        sub.release = weakref.finalize(sub, self._release)
        return sub

    def _release(self) -> None:
        self._count -= 1

    def close(self, sub: Subscriber) -> None:
        """Forget the subscriber (idempotent)."""
        if sub.closed:
            return
        sub.closed = sub.dropped = True
        if sub.release is not None:
            sub.release()  # runs once, whoever calls it first
        subs = self._board if sub.task_id is None else self._tasks.get(sub.task_id, set())
        subs.discard(sub)
        if sub.task_id is not None and not subs:
            self._tasks.pop(sub.task_id, None)

    async def follow(
        self, sub: Subscriber, after: tuple[int, int], heartbeat: float, max_age: float
    ) -> AsyncIterator[list[Frame] | None]:
        """What the subscriber missed after `after`, read from the tables, then its live feed,
        in batches (each what one read or one wake-up brought); None when nothing came for
        `heartbeat` seconds. Ends after an end or resume message, or after `max_age` seconds
        (the client then resumes, perhaps on another process)."""
        await self._ready.wait()  # before it, `fetched` is not yet where the tables are
        loop = asyncio.get_running_loop()
        deadline, cursor, target = loop.time() + max_age, after, self.fetched
        async for batch in self._replay(sub, cursor, target):  # the bulk, holding no one up
            cursor = batch[-1].key
            yield batch
            if batch[-1].kind == "end":
                return
        cursor = max(cursor, (target, LAST_RANK))
        async with self._lock:  # between two fan-outs: the next one includes this subscriber
            joined = self.fetched
            sub.last = format_token(cursor)
            self._register(sub)
        async for batch in self._replay(sub, cursor, joined):  # what came while catching up
            cursor = batch[-1].key
            yield batch
            if batch[-1].kind == "end":
                return
        # One timer per stream, moved only when it fires: a message costs no timer work.
        sent_at, timer = loop.time(), None

        def ring() -> None:
            nonlocal timer
            timer = None
            sub.wake()

        try:
            while True:
                if not sub.pending:
                    now = loop.time()
                    if now >= deadline:
                        return
                    if now >= sent_at + heartbeat:
                        sent_at = now
                        yield None
                        continue
                    if timer is None:
                        timer = loop.call_at(min(sent_at + heartbeat, deadline), ring)
                    sub.waiter = loop.create_future()
                    await sub.waiter
                    sub.waiter = None
                    continue
                batch, sub.pending = sub.pending, []
                out, ended = _after(batch, cursor)
                if out:
                    cursor = max(cursor, out[-1].key)
                    sent_at = loop.time()
                    yield out
                if ended or sent_at >= deadline:  # a busy stream is closed at its age too
                    return
        finally:
            sub.waiter = None
            if timer is not None:
                timer.cancel()

    def _register(self, sub: Subscriber) -> None:
        if sub.task_id is None:
            self._board.add(sub)
        else:
            self._tasks.setdefault(sub.task_id, set()).add(sub)

    async def _replay(
        self, sub: Subscriber, cursor: tuple[int, int], upto: int
    ) -> AsyncIterator[list[Frame]]:
        after = cursor[0] if cursor[1] >= LAST_RANK else cursor[0] - 1
        ids = None if sub.task_id is None else [sub.task_id]
        while after < upto:
            page = await self.changes.changes(ids, after, upto)
            batch = [f for f, status in _frames(page, sub.min_level)
                     if f.key > cursor and sub.wants(status)]  # fmt: skip
            batch, ended = _after(batch, cursor)  # nothing after an end message
            if batch:
                yield batch
            if ended:
                return
            after = page.reached

    async def _pump(self) -> None:
        await self._ready.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.watermark() > self.fetched:
                try:
                    async with self._lock:
                        await self._fan_out(self.watermark())
                except Exception as e:  # noqa: BLE001 - streams wait, the next advance retries
                    log.warning("streams.read_failed", error=str(e))
                    await asyncio.sleep(1.0)

    async def _fan_out(self, upto: int) -> None:
        after, started = self.fetched, time.monotonic()
        pages: list[tuple[ChangePage, set[Subscriber] | None]] = []
        if self._tasks:
            pages.append((await self.changes.changes(list(self._tasks), after, upto), None))
        if self._board:
            pages.append((await self.changes.changes(None, after, upto), self._board))
        reached = min((p.reached for p, _ in pages), default=upto)
        limit = self.queue_size
        for page, board in pages:
            for change, tok, status in _tokens(page, reached):
                subs = board if board is not None else self._tasks.get(change.task_id, ())
                by_level: dict[int, Frame | None] = {}  # each message encoded once per level
                for sub in subs:
                    if sub.min_level in by_level:
                        f = by_level[sub.min_level]
                    else:
                        f = by_level[sub.min_level] = frame(change, tok, sub.min_level)
                    if f is not None and sub.wants(status):
                        sub.offer(f, limit)
        self.fetched = reached
        if pages:
            took = round(time.monotonic() - started, 4)
            log.debug("streams.fanned_out", upto=reached, took=took)

    async def _listen(self) -> None:
        """LISTEN for the runners' positions; read them from the tracking table every second too
        (a runner records an idle projection's position without a NOTIFY)."""
        while True:
            try:
                async with await AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {READ_MODELS_CHANNEL}")
                    while True:
                        self._advance(await positions(conn))
                        if not self._ready.is_set():
                            self.fetched = self.watermark()
                            self._ready.set()
                        async for n in conn.notifies(timeout=1.0):
                            name, _, position = n.payload.partition(":")
                            self._advance({name: int(position)})
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                log.warning("streams.listen_lost", error=str(e))
                await asyncio.sleep(1.0)

    def _advance(self, reached: dict[str, int]) -> None:
        for name, position in reached.items():
            if position > self._positions.get(name, 0):
                self._positions[name] = position
        if self.watermark() > self.fetched:
            self._wake.set()


def _tokens(page: ChangePage, upto: int) -> list[tuple[Change, str, RowStatus]]:
    """Each change with its resume token and, for a task row, its status and the one before."""
    changes = [c for c in page.changes if c.position <= upto]
    out: list[tuple[Change, str, RowStatus]] = []
    for i, c in enumerate(changes):
        last = i + 1 == len(changes) or changes[i + 1].position != c.position
        row = c.rows[0]
        status = (row["status"], row.get("previous_status")) if c.kind == "task" else None
        out.append((c, token(c, last), status))
    return out


def _after(batch: list[Frame], cursor: tuple[int, int]) -> tuple[list[Frame], bool]:
    """The frames past `cursor` (another process may have sent the others already), up to an
    end or resume message; and whether one came (the stream then ends)."""
    out: list[Frame] = []
    for f in batch:
        if f.kind == "resume" or f.key > cursor:
            out.append(f)
        if f.kind in ("resume", "end"):
            return out, True
    return out, False


def _frames(page: ChangePage, min_level: int) -> list[tuple[Frame, RowStatus]]:
    out: list[tuple[Frame, RowStatus]] = []
    for change, tok, status in _tokens(page, page.reached):
        f = frame(change, tok, min_level)
        if f is not None:
            out.append((f, status))
    return out
