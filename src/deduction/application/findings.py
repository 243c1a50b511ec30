"""What a poll plans and learns, and what a command tells the worker to do next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deduction.application.log_cursor import Cursor, Gap
from deduction.application.ports import (
    EngineAgent,
    EngineError,
    EngineRunNotFoundError,
    EngineTaskStatus,
)


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
    cursor: Cursor = field(default_factory=Cursor)
    log_version: int = 0  # the log stream's version the cursor was read at
    restart_requested: bool = False  # a restart of the failed attempt was asked for already


@dataclass
class LogRead:
    """What the reads of one agent's logs in one poll brought."""

    version: int  # the log stream's version the reads started from
    cursor: Cursor
    lines: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # lines that could not be read (broken, or without a time)
    gaps: list[Gap] = field(default_factory=list)
    complete: bool = False  # the last read brought nothing new: the Engine had nothing more


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
    logs: dict[int, LogRead] = field(default_factory=dict)
    restarted: set[int] = field(default_factory=set)
    resumed: set[int] = field(default_factory=set)  # the Engine is past the failed attempt
    cannot_restart: dict[int, str] = field(default_factory=dict)
    restart_supported: bool | None = None
    run_missing: EngineError | None = None  # an agent's logs answered "no such run"


@dataclass(frozen=True)
class Outcome:
    """The task after a command: what follow-up work it needs."""

    position: int
    status: str
    needs_stop: bool = False
    pending_updates: bool = False
    lines: int = 0
    gaps: int = 0  # log gaps recorded by this poll


@dataclass(frozen=True)
class SubmitPlan:
    task_id: int
    payload: dict[str, Any]
    included_updates: list[int]
    position: int = 0  # of its SubmissionRequested event


@dataclass(frozen=True)
class UpdatePlan:
    engine_task_id: str
    payload: dict[str, Any]
    update_ids: list[int]


def match_agents(
    execution_ids: list[int],
    agents: list[EngineAgent],
    paired: dict[int, str | None] | None = None,
) -> dict[int, EngineAgent]:
    """Pair reported agents with executions: by echoed `ref` when every agent has one, else by
    position (a 4.1 Engine lists agents in the order they were submitted).

    A report that cannot be the run we submitted — another number of agents, or other ids
    for agents already paired (`paired`) — raises EngineRunNotFoundError: the Engine
    answers for a run it gave the same id after forgetting ours, and its reports must not be
    applied to this task.
    """
    by_ref = {str(a.ref): a for a in agents if a.ref is not None}
    if agents and len(by_ref) == len(agents) and set(by_ref) == {str(i) for i in execution_ids}:
        matched = {i: by_ref[str(i)] for i in execution_ids}
    elif len(agents) != len(execution_ids):
        raise _not_our_run(f"{len(agents)} agents for {len(execution_ids)} submitted")
    else:
        matched = dict(zip(execution_ids, agents, strict=True))
    for execution_id, known in (paired or {}).items():
        if known is not None and matched[execution_id].engine_agent_id != known:
            reported = matched[execution_id].engine_agent_id
            raise _not_our_run(f"agent {reported} where {known} was running")
    return matched


def _not_our_run(what: str) -> EngineRunNotFoundError:
    return EngineRunNotFoundError(404, f"the run reports {what}: not the run submitted")
