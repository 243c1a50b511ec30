"""AgentExecution: one agent of a task, as the Engine runs it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from deduction.domain.errors import TaskAlreadyEndedError
from deduction.domain.status import ACTIVE, TERMINAL, check_transition


def engine_past_failure(status: str, attempt: int | None, failed_attempts: int) -> bool:
    """Whether the Engine's report of an agent whose attempt `failed_attempts` failed (and
    awaits its restart) shows it restarted already: any status but failed (only a restart
    moves an agent out of failed), or a higher attempt number when the Engine reports one
    (its first attempt is 1)."""
    return status != "failed" or (attempt is not None and attempt > failed_attempts)


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

    class RestartRequested(Aggregate.Event):
        """The Engine is about to be asked to restart the failed attempt (saved before the
        call, so a worker that dies after it finds the request and checks before asking again)."""

        task_id: int
        agent_name: str
        attempt: int
        operator: str

    class Restarted(Aggregate.Event):
        task_id: int
        agent_name: str
        attempt: int
        operator: str

    class LogLinesSkipped(Aggregate.Event):
        """Log lines the Engine sent that could not be read (broken, or without a time)."""

        task_id: int
        agent_name: str
        count: int
        operator: str

    class LogGapRecorded(Aggregate.Event):
        """Log lines the Engine holds that no read under its API can give: those stamped from
        `start` to before `end`, `line_count` of them when the Engine's numbering tells."""

        task_id: int
        agent_name: str
        detail: str
        start: str
        end: str
        line_count: int | None
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
        old_params: dict[str, Any],
        new_params: dict[str, Any],
        operator: str,
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
        self.restart_requested = False

    def record_restart_requested(self) -> None:
        """Before the Engine is asked to restart the failed attempt (once per attempt)."""
        if self.awaiting_restart and not self.restart_requested:
            self._restart_requested(self.task_id, self.agent_name, self.retry_count, "system")

    @event(RestartRequested)
    def _restart_requested(
        self, task_id: int, agent_name: str, attempt: int, operator: str
    ) -> None:
        self.restart_requested = True

    def record_restarted(self, operator: str = "system") -> None:
        self._restarted(self.task_id, self.agent_name, self.retry_count, operator)

    @event(Restarted)
    def _restarted(self, task_id: int, agent_name: str, attempt: int, operator: str) -> None:
        self.awaiting_restart = False
        self.restart_requested = False
        self.progress = 0

    awaiting_restart = False
    restart_requested = False

    def engine_is_past_failure(self, status: str, attempt: int | None) -> bool:
        return self.awaiting_restart and engine_past_failure(status, attempt, self.retry_count)

    # -- logs that could not be stored -------------------------------------------------------

    def record_log_lines_skipped(self, lines: int) -> None:
        if lines > 0:
            self._log_lines_skipped(self.task_id, self.agent_name, lines, "system")

    @event(LogLinesSkipped)
    def _log_lines_skipped(self, task_id: int, agent_name: str, count: int, operator: str) -> None:
        self.log_lines_skipped = self.log_lines_skipped + count

    def record_log_gap(self, detail: str, start: str, end: str, line_count: int | None) -> None:
        self._log_gap_recorded(
            self.task_id, self.agent_name, detail[:1000], start, end, line_count, "system"
        )

    @event(LogGapRecorded)
    def _log_gap_recorded(self, task_id: int, agent_name: str, detail: str, start: str,
                          end: str, line_count: int | None, operator: str) -> None:  # fmt: skip
        self.log_gaps = self.log_gaps + 1

    log_lines_skipped = 0
    log_gaps = 0

    # -- what the Engine reports -------------------------------------------------------------

    def apply_engine_report(
        self,
        status: str,
        progress: int,
        result: dict[str, Any] | None,
        error: str | None,
        *,
        restarted: bool = False,
        cannot_restart_reason: str | None = None,
        restart_supported: bool | None = None,
        attempt: int | None = None,
    ) -> None:
        """Move as the Engine's report of this agent says. `restarted`: the agent was
        restarted during this poll; `cannot_restart_reason`: a restart was refused;
        `attempt`: the Engine's attempt number, when it reports one.

        A report showing the Engine past the failed attempt (see engine_is_past_failure) is
        taken as the restart and applied: the restart was asked for by a worker that died
        before saving it, or by another worker whose save has not landed."""
        if self.is_ended:
            return
        if cannot_restart_reason is not None:
            error = f"{self.error or 'failed'} (not retried: {cannot_restart_reason})"
            self.change_status("failed", "engine", error=error)
            return
        if restarted:
            if self.awaiting_restart:  # (another poll may have recorded it meanwhile)
                self.record_restarted()
            return  # this report predates the restart
        if self.engine_is_past_failure(status, attempt):
            self.record_restarted("engine")
        if self.awaiting_restart:
            return  # still failed; restarted once its backoff has passed
        if status in ("running", "completed") and self.status == "pending":
            self.change_status("running", "engine")
        if status in ACTIVE:
            self.report_progress(progress)
        elif status == "completed":
            self.report_progress(100)
            self.change_status("completed", "engine", result=result)
        elif status == "failed":
            self._report_failure(progress, error, restart_supported)
        elif status == "stopped":
            self.change_status("stopped", "engine")

    def _report_failure(
        self, progress: int, error: str | None, restart_supported: bool | None
    ) -> None:
        """A failed attempt is retried while retries are left and the Engine may restart."""
        error = error or "the Engine reported the agent failed"
        if self.can_retry and restart_supported is not False:
            self.report_progress(progress)
            self.record_attempt_failed(error)
            return
        if self.can_retry:
            error = f"{error} (not retried: the Engine cannot restart agents)"
        self.change_status("failed", "engine", error=error)

    def record_engine_task_ended(self, engine_status: str, *, restarted: bool = False) -> None:
        """The Engine ended the whole task: end this agent if it is still active, unless it
        is being retried (the report predates its restart)."""
        if engine_status not in ("failed", "stopped"):
            return
        if self.is_ended or self.awaiting_restart or restarted:
            return
        error = (
            f"the Engine reported the task {engine_status}" if engine_status == "failed" else None
        )
        self.change_status(engine_status, "engine", error=error)
