"""AgentExecution: one agent of a task, as the Engine runs it."""

from __future__ import annotations

from typing import Any

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from deduction.domain.errors import TaskAlreadyEndedError
from deduction.domain.status import TERMINAL, check_transition


class AgentExecution(Aggregate):
    """An agent's configuration, status, progress and outcome within one task."""

    class Created(Aggregate.Created):
        execution_id: int
        task_id: int
        seq: int
        agent_meta_id: int
        agent_name: str
        agent_load: str
        side: str
        params: dict[str, Any]
        max_retry: int
        operator: str

    class ConfigUpdated(Aggregate.Event):
        task_id: int
        agent_name: str
        old_params: dict[str, Any]
        new_params: dict[str, Any]
        operator: str

    class EngineAgentAssigned(Aggregate.Event):
        engine_agent_id: str
        operator: str

    class StatusChanged(Aggregate.Event):
        task_id: int
        agent_name: str
        old_status: str
        new_status: str
        result: dict[str, Any] | None
        error: str | None
        operator: str

    class ProgressReported(Aggregate.Event):
        progress: int
        operator: str

    class AttemptFailed(Aggregate.Event):
        task_id: int
        agent_name: str
        attempt: int
        error: str | None
        operator: str

    class Restarted(Aggregate.Event):
        task_id: int
        agent_name: str
        attempt: int
        operator: str

    @staticmethod
    def create_id(execution_id: int) -> UUID:
        return UUID(int=execution_id)

    @event(Created)
    def __init__(
        self,
        execution_id: int,
        task_id: int,
        seq: int,
        agent_meta_id: int,
        agent_name: str,
        agent_load: str,
        side: str,
        params: dict[str, Any],
        max_retry: int,
        operator: str,
    ) -> None:
        self.execution_id, self.task_id, self.seq = execution_id, task_id, seq
        self.agent_meta_id, self.agent_name, self.agent_load = agent_meta_id, agent_name, agent_load
        self.side, self.params, self.max_retry = side, dict(params), max_retry
        self.status = "pending"
        self.progress = 0
        self.engine_agent_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.retry_count = 0

    @property
    def is_ended(self) -> bool:
        return self.status in TERMINAL

    def update_params(self, changes: dict[str, Any], operator: str) -> bool:
        """Merge `changes` into the params (given keys replace, others stay)."""
        if self.status in TERMINAL:
            raise TaskAlreadyEndedError(self.status, "update the agent's params")
        new = {**self.params, **changes}
        if new == self.params:
            return False
        self._config_updated(self.task_id, self.agent_name, dict(self.params), new, operator)
        return True

    @event(ConfigUpdated)
    def _config_updated(
        self,
        task_id: int,
        agent_name: str,
        old_params: dict[str, Any], new_params: dict[str, Any], operator: str
    ) -> None:
        self.params = dict(new_params)

    def assign_engine_agent(self, engine_agent_id: str) -> None:
        if self.engine_agent_id != engine_agent_id:
            self._engine_agent_assigned(engine_agent_id, "engine")

    @event(EngineAgentAssigned)
    def _engine_agent_assigned(self, engine_agent_id: str, operator: str) -> None:
        self.engine_agent_id = engine_agent_id

    def change_status(
        self,
        new_status: str,
        operator: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        check_transition("agent execution", self.status, new_status)
        self._status_changed(
            self.task_id, self.agent_name, self.status, new_status, result, error, operator
        )

    @event(StatusChanged)
    def _status_changed(
        self,
        task_id: int,
        agent_name: str,
        old_status: str,
        new_status: str,
        result: dict[str, Any] | None,
        error: str | None,
        operator: str,
    ) -> None:
        self.status = new_status
        if result is not None:
            self.result = result
        if error is not None:
            self.error = error

    def report_progress(self, progress: int) -> None:
        progress = max(0, min(100, progress))
        if progress != self.progress and self.status not in TERMINAL:
            self._progress_reported(progress, "engine")

    @event(ProgressReported)
    def _progress_reported(self, progress: int, operator: str) -> None:
        self.progress = progress

    @property
    def can_retry(self) -> bool:
        return self.retry_count < self.max_retry

    def record_attempt_failed(self, error: str | None) -> None:
        """A failed attempt that will be retried: the status stays active."""
        self._attempt_failed(self.task_id, self.agent_name, self.retry_count + 1, error, "engine")

    @event(AttemptFailed)
    def _attempt_failed(
        self, task_id: int, agent_name: str, attempt: int, error: str | None, operator: str
    ) -> None:
        self.retry_count = attempt
        self.error = error
        self.awaiting_restart = True

    def record_restarted(self) -> None:
        self._restarted(self.task_id, self.agent_name, self.retry_count, "system")

    @event(Restarted)
    def _restarted(self, task_id: int, agent_name: str, attempt: int, operator: str) -> None:
        self.awaiting_restart = False
        self.progress = 0

    awaiting_restart = False
