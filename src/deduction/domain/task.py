"""DeductionTask: one run of a scheme on the Engine, and the index that keeps names unique."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from deduction.domain.errors import PriorityNotRaisedError, TaskAlreadyEndedError
from deduction.domain.execution import AgentExecution
from deduction.domain.status import TERMINAL, check_transition

Priority = Literal["low", "normal", "high"]
PRIORITIES: tuple[str, ...] = get_args(Priority)
"""Admission order, lowest first; a task created without one is "normal"."""
DEFAULT_PRIORITY = "normal"


def priority_rank(priority: str) -> int:
    return PRIORITIES.index(priority)


class DeductionTask(Aggregate):
    """A submitted exercise: what to run, where it runs and how far it got."""

    class Created(Aggregate.Created):
        task_id: int
        name: str
        description: str | None
        scheme_id: int
        env_instance_id: int
        scheme_snapshot: dict[str, Any]
        env_snapshot: dict[str, Any]
        execution_ids: list[int]
        operator: str
        priority: str = DEFAULT_PRIORITY  # events saved before priorities existed have none

    class PriorityRaised(Aggregate.Event):
        old_priority: str
        new_priority: str
        operator: str

    class SubmissionRequested(Aggregate.Event):
        attempt: int
        operator: str

    class Submitted(Aggregate.Event):
        engine_task_id: str
        engine_url: str
        operator: str

    class StatusChanged(Aggregate.Event):
        old_status: str
        new_status: str
        reason: str | None
        operator: str

    class StopRequested(Aggregate.Event):
        operator: str

    class StopDelivered(Aggregate.Event):
        operator: str

    class UpdateRequested(Aggregate.Event):
        update_id: int
        changes: list[dict[str, Any]]
        operator: str

    class UpdateDelivered(Aggregate.Event):
        update_id: int
        operator: str

    class UpdateRejected(Aggregate.Event):
        update_id: int
        error: str
        operator: str

    class AgentCountsChanged(Aggregate.Event):
        total: int
        completed: int
        failed: int
        operator: str

    class EngineUnreachable(Aggregate.Event):
        since: str
        error: str
        operator: str

    class EngineReachable(Aggregate.Event):
        operator: str

    class EngineRunMissing(Aggregate.Event):
        """The Engine answered that it does not know the run (a restart lost it)."""

        since: str
        error: str
        operator: str

    @staticmethod
    def create_id(task_id: int) -> UUID:
        return UUID(int=task_id)

    @event(Created)
    def __init__(
        self,
        task_id: int,
        name: str,
        description: str | None,
        scheme_id: int,
        env_instance_id: int,
        scheme_snapshot: dict[str, Any],
        env_snapshot: dict[str, Any],
        execution_ids: list[int],
        operator: str,
        priority: str = DEFAULT_PRIORITY,
    ) -> None:
        self.task_id, self.name, self.description = task_id, name, description
        self.priority = priority
        self.scheme_id, self.env_instance_id = scheme_id, env_instance_id
        self.scheme_snapshot, self.env_snapshot = scheme_snapshot, env_snapshot
        self.execution_ids = list(execution_ids)
        self.created_by = operator
        self.status = "pending"
        self.error_message: str | None = None
        self.engine_task_id: str | None = None
        self.engine_url: str | None = None
        self.submission_attempts = 0
        self.stop_requested = self.stop_delivered = False
        self.pending_updates: dict[int, list[dict[str, Any]]] = {}
        self.counts = (len(self.execution_ids), 0, 0)
        self.unreachable_since: str | None = None
        self.run_missing_since: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.status in TERMINAL

    # -- priority ---------------------------------------------------------------------------

    def raise_priority(self, priority: str, operator: str) -> bool:
        """Raise the priority of a task still waiting for admission; False when it already
        has this priority (idempotent). Lowering it, or a task already admitted: refused."""
        if priority == self.priority:
            return False
        if self.status != "pending" or self.submission_attempts or self.stop_requested:
            raise PriorityNotRaisedError(f"the task is {self.status} and no longer queued")
        if priority_rank(priority) < priority_rank(self.priority):
            raise PriorityNotRaisedError(
                f"it can only be raised, and {priority!r} is below {self.priority!r}"
            )
        self._priority_raised(self.priority, priority, operator)
        return True

    @event(PriorityRaised)
    def _priority_raised(self, old_priority: str, new_priority: str, operator: str) -> None:
        self.priority = new_priority

    # -- submission -------------------------------------------------------------------------

    def request_submission(self, operator: str = "system") -> None:
        if self.status != "pending" or self.engine_task_id is not None:
            raise TaskAlreadyEndedError(self.status, "submit")
        self._submission_requested(self.submission_attempts + 1, operator)

    @event(SubmissionRequested)
    def _submission_requested(self, attempt: int, operator: str) -> None:
        self.submission_attempts = attempt

    def record_submitted(self, engine_task_id: str, engine_url: str) -> None:
        if self.engine_task_id is not None:
            return
        self._submitted(engine_task_id, engine_url, "engine")
        if self.status == "pending":
            self.change_status("running", None, "engine")

    @event(Submitted)
    def _submitted(self, engine_task_id: str, engine_url: str, operator: str) -> None:
        self.engine_task_id, self.engine_url = engine_task_id, engine_url

    # -- status ------------------------------------------------------------------------------

    def change_status(self, new_status: str, reason: str | None, operator: str) -> None:
        check_transition("task", self.status, new_status)
        self._status_changed(self.status, new_status, reason, operator)

    @event(StatusChanged)
    def _status_changed(
        self, old_status: str, new_status: str, reason: str | None, operator: str
    ) -> None:
        self.status = new_status
        if new_status == "failed" and reason:
            self.error_message = reason

    # -- stop --------------------------------------------------------------------------------

    def request_stop(self, operator: str) -> bool:
        """Stop the task; False when it was already stopped (idempotent)."""
        if self.status == "stopped":
            return False
        if self.status in TERMINAL:
            raise TaskAlreadyEndedError(self.status, "stop")
        self._stop_requested(operator)
        self.change_status("stopped", f"stopped by {operator}", operator)
        return True

    @event(StopRequested)
    def _stop_requested(self, operator: str) -> None:
        self.stop_requested = True

    def fail_abandoned(self, reason: str) -> None:
        """Fail a task whose Engine run may still go on: the Engine is told to stop it once
        it answers again."""
        self.change_status("failed", reason, "system")
        if self.engine_task_id is not None and not self.stop_requested:
            self._stop_requested("system")

    @property
    def needs_engine_stop(self) -> bool:
        return self.stop_requested and not self.stop_delivered and self.engine_task_id is not None

    def record_stop_delivered(self) -> None:
        if self.stop_requested and not self.stop_delivered:
            self._stop_delivered("engine")

    @event(StopDelivered)
    def _stop_delivered(self, operator: str) -> None:
        self.stop_delivered = True

    # -- configuration updates ---------------------------------------------------------------

    def request_update(self, update_id: int, changes: list[dict[str, Any]], operator: str) -> None:
        if self.status in TERMINAL:
            raise TaskAlreadyEndedError(self.status, "update the configuration")
        self._update_requested(update_id, changes, operator)

    @event(UpdateRequested)
    def _update_requested(
        self, update_id: int, changes: list[dict[str, Any]], operator: str
    ) -> None:
        self.pending_updates[update_id] = changes

    def record_update_delivered(self, update_id: int) -> None:
        if update_id in self.pending_updates:
            self._update_delivered(update_id, "engine")

    @event(UpdateDelivered)
    def _update_delivered(self, update_id: int, operator: str) -> None:
        self.pending_updates.pop(update_id, None)

    def record_update_rejected(self, update_id: int, error: str) -> None:
        """The Engine refused the update (4xx): sending it again cannot help."""
        if update_id in self.pending_updates:
            self._update_rejected(update_id, error[:1000], "engine")

    @event(UpdateRejected)
    def _update_rejected(self, update_id: int, error: str, operator: str) -> None:
        self.pending_updates.pop(update_id, None)

    # -- progress bookkeeping ----------------------------------------------------------------

    def record_agent_counts(self, total: int, completed: int, failed: int) -> None:
        if (total, completed, failed) != self.counts:
            self._agent_counts_changed(total, completed, failed, "engine")

    @event(AgentCountsChanged)
    def _agent_counts_changed(self, total: int, completed: int, failed: int, operator: str) -> None:
        self.counts = (total, completed, failed)

    def settle(self, executions: Sequence[AgentExecution]) -> None:
        """Record the agents' counts; once every agent has ended, a running task ends too:
        failed if any agent failed, else stopped if any was stopped, else completed."""
        completed = sum(ex.status == "completed" for ex in executions)
        failed = [ex for ex in executions if ex.status == "failed"]
        self.record_agent_counts(len(executions), completed, len(failed))
        if self.status != "running" or not all(ex.is_ended for ex in executions):
            return
        if failed:
            which = "; ".join(f"{ex.agent_name} (execution {ex.execution_id}): {ex.error}"
                              for ex in failed)  # fmt: skip
            self.change_status("failed", f"agent failed: {which}", "engine")
        elif any(ex.status == "stopped" for ex in executions):
            self.change_status("stopped", "the Engine stopped the agents", "engine")
        else:
            self.change_status("completed", None, "engine")

    def record_engine_unreachable(self, since: str, error: str) -> None:
        """Note once (not at every failed poll) that the Engine stopped answering."""
        if self.unreachable_since is None:
            self._engine_unreachable(since, error[:1000], "system")

    @event(EngineUnreachable)
    def _engine_unreachable(self, since: str, error: str, operator: str) -> None:
        self.unreachable_since = since

    def record_engine_reachable(self) -> None:
        if self.unreachable_since is not None or self.run_missing_since is not None:
            self._engine_reachable("system")

    @event(EngineReachable)
    def _engine_reachable(self, operator: str) -> None:
        self.unreachable_since = None
        self.run_missing_since = None

    def record_run_missing(self, since: str, error: str) -> None:
        """Note once (not at every poll) that the Engine does not know this task's run."""
        if self.run_missing_since is None:
            self._run_missing(since, error[:1000], "system")

    @event(EngineRunMissing)
    def _run_missing(self, since: str, error: str, operator: str) -> None:
        self.run_missing_since = since


class TaskName(Aggregate):
    """Claims a task name: its id is derived from the name, so a second claim conflicts."""

    class Created(Aggregate.Created):
        name: str
        task_id: int

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"deduction:task-name:{name}")

    @event(Created)
    def __init__(self, name: str, task_id: int) -> None:
        self.name, self.task_id = name, task_id
