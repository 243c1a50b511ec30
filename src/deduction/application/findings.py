"""What a poll plans and learns, and what a command tells the worker to do next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deduction.application.ports import (
    EngineAgent,
    EngineError,
    EngineLogLine,
    EngineProtocolError,
    EngineTaskStatus,
)
from deduction.domain.times import iso_utc, utc_now


@dataclass(frozen=True)
class ExecutionPlan:
    execution_id: int
    engine_agent_id: str | None
    ended: bool
    awaiting_restart: bool
    retry_count: int
    failed_at: datetime | None  # when the failed attempt was recorded (restart backoff)
    since: str | None
    drained: bool


@dataclass(frozen=True)
class PollPlan:
    task_id: int
    engine_task_id: str
    ended: bool
    stop_pending: bool
    executions: list[ExecutionPlan]  # in submission order
    # The aggregates and log cursors the plan was made from: the poll's first save attempt
    # reuses them (a concurrent change makes that save conflict, and the retry reloads).
    loaded: Any = field(default=None, repr=False, compare=False)


@dataclass
class PollReport:
    """Everything one poll learnt about a task."""

    task_id: int
    plan: PollPlan | None = None
    status: EngineTaskStatus | None = None
    error: EngineError | None = None
    logs: dict[int, list[EngineLogLine]] = field(default_factory=dict)
    restarted: set[int] = field(default_factory=set)
    cannot_restart: dict[int, str] = field(default_factory=dict)
    restart_supported: bool | None = None


@dataclass(frozen=True)
class Outcome:
    """The task after a command: what follow-up work it needs."""

    position: int
    status: str
    needs_stop: bool = False
    pending_updates: bool = False
    lines: int = 0


@dataclass(frozen=True)
class SubmitPlan:
    task_id: int
    payload: dict[str, Any]
    included_updates: list[int]


@dataclass(frozen=True)
class UpdatePlan:
    engine_task_id: str
    payload: dict[str, Any]
    update_ids: list[int]


def match_agents(execution_ids: list[int], agents: list[EngineAgent]) -> dict[int, EngineAgent]:
    """Pair reported agents with executions: by echoed `ref` when every agent has one, else by
    position (a 4.1 Engine lists agents in the order they were submitted)."""
    if agents and all(a.ref is not None for a in agents):
        by_ref = {str(a.ref): a for a in agents}
        if set(by_ref) == {str(i) for i in execution_ids}:
            return {i: by_ref[str(i)] for i in execution_ids}
    if len(agents) != len(execution_ids):
        raise EngineProtocolError(
            f"the Engine reported {len(agents)} agents for {len(execution_ids)} submitted",
            iso_utc(utc_now()),
        )
    return dict(zip(execution_ids, agents))
