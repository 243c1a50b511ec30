"""What auditors read of the event store: stored events, decoded and upcast, and the port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Protocol
from uuid import UUID

import msgspec
from eventsourcing.utils import resolve_topic

from deduction.domain import AgentExecution, DeductionTask
from deduction.domain.logs import log_stream_id

_decoder = msgspec.json.Decoder()
LOGS = "ExecutionLog.LogsReceived"


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One row of the event store, exactly as stored."""

    position: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A stored event as an auditor reads it: its fields after upcasting, with the schema
    version it was stored with."""

    position: int
    aggregate_type: str  # "DeductionTask", "AgentExecution", "ExecutionLog", ...
    aggregate_id: UUID
    version: int
    type: str  # "DeductionTask.StatusChanged"
    timestamp: datetime
    operator: str | None
    schema_version: int
    fields: dict[str, Any]


@cache
def _event_class(topic: str) -> type:
    cls: type = resolve_topic(topic)
    return cls


def event_name(topic: str) -> str:
    """ "module:DeductionTask.StatusChanged" -> "DeductionTask.StatusChanged"."""
    return topic.partition(":")[2]


def upcast(topic: str, state: dict[str, Any]) -> int:
    """Bring decoded state to the event class's current version, as the library's mapper
    does; returns the version it was stored with."""
    stored = int(state.pop("class_version", 1))
    try:
        cls = _event_class(topic)
    except Exception:  # noqa: BLE001 - a topic no class answers to is shown as stored
        return stored
    version = stored
    while version < getattr(cls, "class_version", 1):
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    return stored


def read_event(record: StoredRecord, *, full_logs: bool = True) -> AuditEvent:
    """Decode and upcast one stored event; log batches are summarised unless `full_logs`."""
    state: dict[str, Any] = _decoder.decode(record.state)
    schema_version = upcast(record.topic, state)
    timestamp = datetime.fromisoformat(state.pop("timestamp"))
    name = event_name(record.topic)
    if name == LOGS and not full_logs:
        state = summarise_logs(state)
    return AuditEvent(
        position=record.position,
        aggregate_type=name.partition(".")[0],
        aggregate_id=record.originator_id,
        version=record.version,
        type=name,
        timestamp=timestamp,
        operator=state.get("operator"),
        schema_version=schema_version,
        fields=state,
    )


def summarise_logs(state: dict[str, Any]) -> dict[str, Any]:
    """A log batch without its lines: how many, of which levels, over which times."""
    lines = state.get("lines") or []
    levels: dict[str, int] = {}
    for line in lines:
        level = str(line.get("level"))
        levels[level] = levels.get(level, 0) + 1
    stamps = [str(line.get("timestamp")) for line in lines]
    summary = {k: v for k, v in state.items() if k != "lines"}
    summary.update(line_count=len(lines), levels=levels,
                   first_line_time=stamps[0] if stamps else None,
                   last_line_time=stamps[-1] if stamps else None)  # fmt: skip
    return summary


@dataclass(frozen=True)
class TaskStreams:
    """The aggregates that make up a task: itself, its executions and their log streams."""

    task_id: int
    execution_ids: tuple[int, ...]

    @property
    def state_ids(self) -> list[UUID]:
        """The aggregates whose events build the task's state (log streams left out)."""
        return [DeductionTask.create_id(self.task_id)] + [
            AgentExecution.create_id(e) for e in self.execution_ids
        ]

    @property
    def all_ids(self) -> list[UUID]:
        return self.state_ids + [log_stream_id(e) for e in self.execution_ids]


class _Created(msgspec.Struct):
    """The fields of a Created event that tie aggregates together."""

    task_id: int | None = None
    execution_ids: list[int] = []


_created = msgspec.json.Decoder(_Created)


def task_of(created_state: bytes) -> int | None:
    """The task an execution belongs to, from the execution's stored Created event."""
    return _created.decode(created_state).task_id


def streams_of(task_id: int, created_state: bytes) -> TaskStreams:
    """The task's aggregates, from the task's stored Created event."""
    return TaskStreams(task_id, tuple(_created.decode(created_state).execution_ids))


@dataclass(frozen=True)
class EventQuery:
    """Which stored events to read, oldest first."""

    after: int = 0
    limit: int | None = 100
    aggregate_ids: Sequence[UUID] | None = None  # None: every aggregate
    topics: Sequence[str] | None = None  # None: every type
    start: datetime | None = None  # timestamp >= start
    end: datetime | None = None  # timestamp < end
    upto: int | None = None  # position <= upto
    exclude_topics: Sequence[str] = field(default_factory=tuple)


class EventLog(Protocol):
    """The event store as auditors read it."""

    async def select(self, query: EventQuery) -> list[StoredRecord]:
        """Stored events matching the query, by position."""
        ...

    async def select_versions(
        self,
        aggregate_ids: Sequence[UUID],
        after: Sequence[int],
        upto: Sequence[int] | None,
        position: int | None,
    ) -> list[StoredRecord]:
        """Stored events of each aggregate with a version above `after` and at most `upto`
        (None: no bound), at or before `position` (None: any), by position."""
        ...

    async def task_streams(self, task_id: int) -> TaskStreams | None:
        """The task's aggregates; None when no such task was ever created."""
        ...

    async def execution_task(self, execution_id: int) -> int | None:
        """The task an execution belongs to; None when no such execution exists."""
        ...

    async def head(self) -> int:
        """The newest position in the store (0 when empty)."""
        ...


def topics_of(names: Sequence[str]) -> list[str]:
    """Stored topics of short event names ("DeductionTask.StatusChanged")."""
    known = known_topics()
    return [topic for topic, name in known.items() if name in names]


@cache
def known_topics() -> dict[str, str]:
    """Every event class of the domain: stored topic -> short name."""
    from eventsourcing.domain import Aggregate
    from eventsourcing.utils import get_topic

    from deduction import domain

    out: dict[str, str] = {}
    for value in vars(domain).values():
        if isinstance(value, type) and issubclass(value, Aggregate):
            for attr in vars(value).values():
                if isinstance(attr, type) and issubclass(attr, Aggregate.Event):
                    out[get_topic(attr)] = event_name(get_topic(attr))
    return out
