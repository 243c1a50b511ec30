"""Response shapes: the read tables' columns as msgspec Structs, built from query rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import msgspec

from deduction.adapters.http.envelope import Timestamp
from deduction.domain.status import Status
from deduction.domain.task import Priority
from deduction.domain.times import rfc3339

V = TypeVar("V", bound=msgspec.Struct)


class TaskCreated(msgspec.Struct):
    task_id: int
    status: Status
    create_time: Timestamp


class TaskStopped(msgspec.Struct):
    task_id: int
    status: Status


class TaskPriority(msgspec.Struct):
    task_id: int
    priority: Priority


class TaskUpdated(msgspec.Struct):
    updated_count: int


class AgentExecution(msgspec.Struct):
    """One agent of a task (a row of agent_execution)."""

    id: int
    deduction_task_id: int
    seq: int
    agent_meta_id: int
    agent_name: str
    agent_load: str
    side: str
    params: dict[str, Any]
    status: Status
    engine_agent_id: str | None
    progress: int
    start_time: Timestamp | None
    end_time: Timestamp | None
    result: dict[str, Any] | None
    error_message: str | None
    retry_count: int
    max_retry: int
    create_at: Timestamp
    update_at: Timestamp
    log_lines_skipped: int = 0
    """Log lines the Engine sent that could not be read (broken, or without a time)."""
    log_gaps: int = 0
    """Spans of log lines the Engine holds that its API cannot give (see the history)."""


class Task(msgspec.Struct):
    """A task (a row of deduction_task, without bookkeeping columns)."""

    id: int
    name: str
    description: str | None
    status: Status
    scheme_id: int
    env_instance_id: int
    engine_task_id: str | None
    engine_url: str | None
    scheme_snapshot: dict[str, Any]
    start_time: Timestamp | None
    end_time: Timestamp | None
    total_agents: int
    completed_agents: int
    failed_agents: int
    error_message: str | None
    create_at: Timestamp
    update_at: Timestamp
    created_by: str | None
    stop_requested: bool
    engine_unreachable_since: Timestamp | None
    engine_error: str | None
    priority: Priority
    """Admission order: high before normal before low (README, "Admission and priorities")."""
    queue_position: int | None = None
    """1 for the next task to be submitted; null once admitted (and in as_of answers)."""


class TaskDetail(Task):
    agent_executions: list[AgentExecution] = msgspec.field(default_factory=list)


class TaskPage(msgspec.Struct):
    total: int
    """Matching tasks (status filter), whatever the cursor, counted up to 10,000."""
    page: int
    size: int
    items: list[Task]
    total_is_lower_bound: bool = False
    """True when more than 10,000 tasks match: `total` is then 10,000, not the exact count."""
    next_cursor: int | None = None
    """Pass as `after_id` for the next page (keyset paging); null when this page is the last."""


class LogLine(msgspec.Struct):
    id: int
    agent_execution_id: int
    timestamp: Timestamp
    level: str
    message: str
    source: str | None
    extra_data: Any
    create_at: Timestamp


class LogPage(msgspec.Struct):
    total: int
    """Lines matching the filters (level, times), whatever the cursor."""
    logs: list[LogLine]
    next_cursor: int | None
    """Pass as `after_id` for the next page; null when this page is the last."""


class HistoryEntry(msgspec.Struct):
    id: int
    deduction_task_id: int
    agent_execution_id: int | None
    change_type: str
    change_description: str | None
    old_value: dict[str, Any] | None
    new_value: dict[str, Any] | None
    change_time: Timestamp
    operator: str | None
    create_at: Timestamp
    position: int
    """The event store position of the event this entry came from (GET .../events)."""


class AgentMeta(msgspec.Struct):
    id: int
    name: str
    load: str
    description: str | None
    create_at: Timestamp


class Scheme(msgspec.Struct):
    id: int
    name: str
    config: dict[str, Any]
    create_at: Timestamp


class EnvInstance(msgspec.Struct):
    id: int
    name: str
    config: dict[str, Any]
    create_at: Timestamp


class AgentMetaPage(msgspec.Struct):
    total: int
    page: int
    size: int
    items: list[AgentMeta]


class SchemePage(msgspec.Struct):
    total: int
    page: int
    size: int
    items: list[Scheme]


class EnvInstancePage(msgspec.Struct):
    total: int
    page: int
    size: int
    items: list[EnvInstance]


def columns(view: type[msgspec.Struct], exclude: tuple[str, ...] = ()) -> list[str]:
    return [f for f in view.__struct_fields__ if f not in exclude]


def _wire(value: Any) -> Any:
    return rfc3339(value) if isinstance(value, datetime) else value


def from_row(view: type[V], row: dict[str, Any], **extra: Any) -> V:
    """Build a response Struct from a query row; times become RFC 3339 strings."""
    return view(**{f: _wire(row[f]) for f in view.__struct_fields__ if f in row}, **extra)
