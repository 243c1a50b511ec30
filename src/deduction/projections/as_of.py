"""State as of a moment: the read models' rows rebuilt in memory by their own handlers, from
the newest snapshot at or before the moment plus the task's events after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import structlog

from deduction.application.audit import (
    EventLog,
    EventQuery,
    StoredRecord,
    TaskStreams,
    event_name,
    upcast,
)
from deduction.application.transcoder import decode_state
from deduction.projections.agents import AgentProjection
from deduction.projections.as_of_snapshots import PostgresSnapshots, Snapshot
from deduction.projections.base import EventRow, Row
from deduction.projections.history import HistoryProjection, history_row
from deduction.projections.tasks import TaskProjection

log = structlog.get_logger(__name__)
_TASKS, _AGENTS = TaskProjection(), AgentProjection()
_TASK_EVENTS = frozenset(_TASKS.topics().values())
_AGENT_EVENTS = frozenset(_AGENTS.topics().values())
HISTORY_TOPICS = tuple(HistoryProjection.topics())
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


@dataclass(frozen=True)
class TaskState:
    """A task's rows as the read tables held them once the store reached `position`."""

    position: int
    task: Row | None
    agents: list[Row]  # in config order (seq, id), as the API lists them


def event_row(record: StoredRecord) -> EventRow:
    """A stored event as the projections' handlers take it (upcast, as auditors read it)."""
    state: dict[str, Any] = decode_state(record.state)
    upcast(record.topic, state)
    return EventRow(
        record.position, record.originator_id.int, record.version, event_name(record.topic),
        state, datetime.fromisoformat(state["timestamp"]),
    )  # fmt: skip


@dataclass
class Fold:
    """Task and agent rows folded event by event; a snapshot every `every` events."""

    streams: TaskStreams
    every: int
    seq: int = 0
    position: int = 0
    versions: list[int] = field(default_factory=list)
    tasks: dict[int, Row] = field(default_factory=dict)
    agents: dict[int, Row] = field(default_factory=dict)
    first_time: datetime | None = None

    @classmethod
    def start(cls, streams: TaskStreams, every: int, base: Snapshot | None) -> Fold:
        fold = cls(streams, every, versions=[0] * len(streams.state_ids))
        if base is not None and base.rows is not None:
            task, agents = _decoder.decode(base.rows)
            fold.seq, fold.position, fold.versions = base.seq, base.position, list(base.versions)
            fold.tasks = {r["id"]: r for r in ([task] if task else [])}
            fold.agents = {r["id"]: r for r in agents}
        return fold

    def apply(self, events: Sequence[EventRow], snapshots: list[Snapshot] | None) -> None:
        """Fold events in position order; with `snapshots`, append one at each interval.
        Task rows and agent rows are apart, so each is folded a chunk at a time."""
        index = {u.int: i for i, u in enumerate(self.streams.state_ids)}
        start = 0
        while start < len(events):
            chunk = events[start : start + self.every - self.seq % self.every]
            start += len(chunk)
            _TASKS.fold(self.tasks, [e for e in chunk if e.name in _TASK_EVENTS])
            _AGENTS.fold(self.agents, [e for e in chunk if e.name in _AGENT_EVENTS])
            for e in chunk:
                self.versions[index[e.originator_int]] = e.version
            earliest = min(e.timestamp for e in chunk)
            self.first_time = min(self.first_time or earliest, earliest)
            self.seq, self.position = self.seq + len(chunk), chunk[-1].notification_id
            if self.seq % self.every == 0:
                if snapshots is not None:
                    snapshots.append(self.snapshot())
                self.first_time = None

    def snapshot(self) -> Snapshot:
        assert self.first_time is not None
        task = next(iter(self.tasks.values()), None)
        rows = _encoder.encode([task, list(self.agents.values())])
        return Snapshot(self.seq, self.position, tuple(self.versions), self.first_time, rows)

    def state(self, position: int) -> TaskState:
        agents = sorted(self.agents.values(), key=lambda r: (r["seq"], r["id"]))
        return TaskState(position, next(iter(self.tasks.values()), None), agents)


@dataclass(frozen=True)
class _Span:
    """The task's state events after snapshot `base` and up to snapshot `end` (None: all)."""

    base: Snapshot | None
    end: Snapshot | None


class AsOfReader:
    """A task's rows as of a position or a moment: the newest snapshot before it, then the
    events after it. Folding past the newest snapshot writes the snapshots it passes."""

    def __init__(self, events: EventLog, snapshots: PostgresSnapshots) -> None:
        self._events, self._snapshots = events, snapshots

    async def at_position(self, task_id: int, upto: int) -> tuple[TaskStreams | None, TaskState]:
        """The task's aggregates (None: no such task) and its rows as of `upto`, from one
        statement; the snapshots a fold passes (missing ones) are written."""
        found = await self._snapshots.at_position(task_id, upto)
        if found is None:
            return None, TaskState(upto, None, [])
        streams, base, records = found
        fold = Fold.start(streams, self._snapshots.every, base)
        written: list[Snapshot] = []
        fold.apply([event_row(r) for r in records], written)
        await self._save(streams.task_id, written)
        return streams, fold.state(upto)

    async def state(
        self, streams: TaskStreams, upto: int | None, moment: datetime | None
    ) -> TaskState:
        """As of the newest event at or before `moment` (and `upto`), or as of `upto`."""
        if moment is None:
            return (await self.at_position(streams.task_id, upto or 0))[1]
        index = await self._snapshots.index(streams.task_id)
        spans = [_Span(a, b) for a, b in zip([None, *index], [*index, None])]
        target, span, events = await self._at_moment(streams, spans, upto, moment)
        return await self._fold(streams, span, [e for e in events if e.notification_id <= target],
                                target)  # fmt: skip

    async def _at_moment(
        self, streams: TaskStreams, spans: list[_Span], upto: int | None, moment: datetime
    ) -> tuple[int, _Span, list[EventRow]]:
        """The newest position at or before `upto` whose event is stamped at or before
        `moment` (0: none), the span it lies in and that span's events. Spans are searched
        newest first; a span whose earliest event is later than `moment` is skipped unread."""
        for span in reversed(spans):
            if upto is not None and span.base is not None and span.base.position >= upto:
                continue
            if span.end is not None and span.end.first_time > moment:
                continue
            events = await self._select(streams, span, upto)
            found = [e.notification_id for e in events if e.timestamp <= moment]
            if found:
                return max(found), span, events
        return 0, spans[0], []

    async def _select(self, streams: TaskStreams, span: _Span, upto: int | None) -> list[EventRow]:
        low = span.base.versions if span.base else (0,) * len(streams.state_ids)
        high = span.end.versions if span.end else None
        records = await self._events.select_versions(streams.state_ids, low, high, upto)
        return [event_row(r) for r in records]

    async def _fold(
        self, streams: TaskStreams, span: _Span, events: list[EventRow], position: int
    ) -> TaskState:
        base = span.base
        if base is not None and base.rows is None:
            base = await self._snapshots.rows(streams.task_id, base)
            if base.rows is None:  # the snapshot went away: read the events from the start
                return await self._fold(streams, _Span(None, None),
                                        await self._select(streams, _Span(None, None), position),
                                        position)  # fmt: skip
        fold = Fold.start(streams, self._snapshots.every, base)
        written: list[Snapshot] | None = [] if span.end is None else None
        fold.apply(events, written)
        await self._save(streams.task_id, written or [])
        return fold.state(position)

    async def _save(self, task_id: int, written: list[Snapshot]) -> None:
        if written:
            try:
                await self._snapshots.save(task_id, written)
            except Exception as e:  # noqa: BLE001 - the answer stands without them
                log.warning("as_of.snapshot_save_failed", task_id=task_id, error=str(e))


async def history_as_of(events: EventLog, streams: TaskStreams, position: int) -> list[Row]:
    """The task's history entries up to `position`, oldest first."""
    query = EventQuery(limit=None, aggregate_ids=streams.state_ids, topics=HISTORY_TOPICS,
                       upto=position)  # fmt: skip
    return [history_row(event_row(r)) for r in await events.select(query)]
