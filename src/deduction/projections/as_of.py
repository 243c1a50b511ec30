"""State as of a moment: the read models' rows rebuilt in memory by their own handlers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from deduction.application.audit import AuditEvent
from deduction.projections.agents import AgentProjection
from deduction.projections.base import EventRow, Row
from deduction.projections.history import HistoryProjection, history_row
from deduction.projections.tasks import TaskProjection

_TASKS, _AGENTS = TaskProjection(), AgentProjection()
_TASK_EVENTS = frozenset(_TASKS.topics().values())
_AGENT_EVENTS = frozenset(_AGENTS.topics().values())
_HISTORY_EVENTS = frozenset(HistoryProjection.topics().values())


@dataclass(frozen=True)
class TaskState:
    """A task's rows as the read tables held them once the store reached `position`."""

    position: int
    task: Row | None
    agents: list[Row]  # in config order (seq, id), as the API lists them
    history: list[Row]  # oldest first


def event_rows(events: Iterable[AuditEvent]) -> list[EventRow]:
    """Audit events in the shape the projections' handlers take."""
    return [
        EventRow(e.position, e.aggregate_id.int, e.version, e.type, e.fields, e.timestamp)
        for e in events
    ]


def position_at(events: Sequence[AuditEvent], moment: datetime) -> int:
    """The newest position among the events that happened at or before `moment` (0: none)."""
    return max((e.position for e in events if e.timestamp <= moment), default=0)


def rebuild(events: Sequence[AuditEvent], upto: int) -> TaskState:
    """Fold the events up to position `upto` into task, agent and history rows."""
    rows = event_rows(e for e in events if e.position <= upto)
    tasks = _TASKS.fold({}, (e for e in rows if e.name in _TASK_EVENTS))
    agents = _AGENTS.fold({}, (e for e in rows if e.name in _AGENT_EVENTS))
    history = [history_row(e) for e in rows if e.name in _HISTORY_EVENTS]
    task = next(iter(tasks.values()), None)
    return TaskState(
        position=upto,
        task=task,
        agents=sorted(agents.values(), key=lambda r: (r["seq"], r["id"])),
        history=history,
    )
