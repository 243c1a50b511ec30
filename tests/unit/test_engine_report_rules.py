"""How an Engine report moves an agent execution, and when a task settles (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from deduction.domain import AgentExecution, DeductionTask


def an_execution(execution_id: int = 11, *, max_retry: int = 3, name: str = "red_agent",
                 status: str = "pending") -> AgentExecution:  # fmt: skip
    execution = AgentExecution(
        execution_id=execution_id, task_id=7, seq=0, agent_meta_id=10001, agent_name=name,
        agent_load="red:v1", side="red", params={"target": "192.168.1.100"},
        max_retry=max_retry, operator="alice",
    )  # fmt: skip
    if status != "pending":
        execution.change_status("running", "engine")
    if status not in ("pending", "running"):
        execution.change_status(status, "engine", error="boom" if status == "failed" else None)
    execution.collect_events()
    return execution


def a_running_task(execution_ids: list[int]) -> DeductionTask:
    task = DeductionTask(
        task_id=7, name="task_20251112_001", description=None, scheme_id=1, env_instance_id=2,
        scheme_snapshot={}, env_snapshot={}, execution_ids=execution_ids, operator="alice",
    )  # fmt: skip
    task.record_submitted("engine-run-1", "http://engine")
    task.collect_events()
    return task


def report(execution: AgentExecution, status: str, progress: int = 0, **kw: Any) -> None:
    execution.apply_engine_report(status, progress, kw.pop("result", None),
                                  kw.pop("error", None), **kw)  # fmt: skip


def new_events(aggregate: Any) -> list[str]:
    return [type(e).__qualname__ for e in aggregate.collect_events()]


def awaiting_restart(execution: AgentExecution) -> AgentExecution:
    report(execution, "failed", 40, error="crashed")
    execution.collect_events()
    assert execution.awaiting_restart
    return execution


# -- one agent's report ------------------------------------------------------------------------


def test_a_pending_agent_reported_running_starts_and_records_its_progress() -> None:
    execution = an_execution()
    report(execution, "running", 30)
    assert (execution.status, execution.progress) == ("running", 30)
    assert new_events(execution) == ["AgentExecution.StatusChanged",
                                     "AgentExecution.ProgressReported"]  # fmt: skip


def test_a_running_agent_records_new_progress_and_nothing_when_it_is_unchanged() -> None:
    execution = an_execution(status="running")
    report(execution, "running", 55)
    assert execution.progress == 55
    assert new_events(execution) == ["AgentExecution.ProgressReported"]
    report(execution, "running", 55)
    assert new_events(execution) == []


def test_a_completed_agent_runs_to_100_percent_and_keeps_its_result() -> None:
    execution = an_execution()
    report(execution, "completed", 80, result={"score": 9})
    assert (execution.status, execution.progress, execution.result) == (
        "completed", 100, {"score": 9})  # fmt: skip
    assert new_events(execution) == ["AgentExecution.StatusChanged",
                                     "AgentExecution.ProgressReported",
                                     "AgentExecution.StatusChanged"]  # fmt: skip


def test_a_failure_with_a_retry_left_is_a_failed_attempt_and_the_agent_stays_active() -> None:
    execution = an_execution(status="running", max_retry=2)
    report(execution, "failed", 40, error="crashed", restart_supported=True)
    assert (execution.status, execution.retry_count, execution.error) == ("running", 1, "crashed")
    assert execution.awaiting_restart and execution.progress == 40
    assert new_events(execution)[-1] == "AgentExecution.AttemptFailed"


def test_a_failure_with_no_retry_left_fails_the_agent_with_the_engines_error() -> None:
    execution = an_execution(status="running", max_retry=0)
    report(execution, "failed", error="out of memory")
    assert (execution.status, execution.error) == ("failed", "out of memory")


def test_a_failure_without_an_error_message_says_the_engine_reported_it() -> None:
    execution = an_execution(status="running", max_retry=0)
    report(execution, "failed")
    assert execution.error == "the Engine reported the agent failed"


def test_a_failure_is_not_retried_when_the_engine_cannot_restart_agents() -> None:
    execution = an_execution(status="running", max_retry=3)
    report(execution, "failed", error="crashed", restart_supported=False)
    assert execution.status == "failed" and execution.retry_count == 0
    assert execution.error == "crashed (not retried: the Engine cannot restart agents)"


def test_a_refused_restart_fails_the_agent_with_the_reason() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "failed", cannot_restart_reason="the Engine answered 409: busy")
    assert execution.status == "failed"
    assert execution.error == "crashed (not retried: the Engine answered 409: busy)"


def test_a_restart_made_during_the_poll_ignores_the_stale_failed_report() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "failed", 40, error="crashed", restarted=True)
    assert (execution.status, execution.progress, execution.retry_count) == ("running", 0, 1)
    assert not execution.awaiting_restart
    assert new_events(execution) == ["AgentExecution.Restarted"]


def test_a_restart_recorded_by_another_poll_meanwhile_is_not_recorded_twice() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "running", 10)  # another poll found the Engine past the failure
    execution.collect_events()
    report(execution, "failed", 40, error="crashed", restarted=True)  # this poll's, older
    assert new_events(execution) == [] and execution.progress == 10


def test_an_agent_awaiting_its_restart_ignores_the_engine_still_reporting_it_failed() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "failed", 40, error="crashed")
    assert execution.awaiting_restart and new_events(execution) == []


def test_an_agent_awaiting_its_restart_that_the_engine_reports_active_is_restarted() -> None:
    """Only a restart moves an agent out of failed: the report is taken as the restart (asked
    for by a worker that died before saving it) and applied."""
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "running", 70)
    assert not execution.awaiting_restart and execution.progress == 70
    assert new_events(execution) == ["AgentExecution.Restarted", "AgentExecution.ProgressReported"]


def test_an_agent_awaiting_its_restart_that_the_engine_reports_completed_completes() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "completed", 100, result={"score": 90})
    assert (execution.status, execution.retry_count, execution.result) == (
        "completed", 1, {"score": 90},
    )  # fmt: skip
    assert new_events(execution)[0] == "AgentExecution.Restarted"


def test_a_higher_attempt_reported_failed_is_the_restarted_attempt_failing() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "failed", 30, error="crashed again", attempt=2)
    assert (execution.status, execution.retry_count) == ("running", 2)
    assert execution.awaiting_restart and execution.error == "crashed again"
    assert new_events(execution) == [
        "AgentExecution.Restarted", "AgentExecution.ProgressReported",
        "AgentExecution.AttemptFailed",
    ]  # fmt: skip


def test_the_failed_attempt_reported_again_with_its_number_changes_nothing() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    report(execution, "failed", 40, error="crashed", attempt=1)
    assert execution.awaiting_restart and new_events(execution) == []


def test_a_restart_is_requested_once_per_failed_attempt() -> None:
    execution = awaiting_restart(an_execution(status="running"))
    execution.record_restart_requested()
    execution.record_restart_requested()
    assert execution.restart_requested
    assert new_events(execution) == ["AgentExecution.RestartRequested"]
    report(execution, "running", 5)
    assert not execution.restart_requested and not execution.awaiting_restart


def test_a_stopped_agent_is_stopped() -> None:
    execution = an_execution(status="running")
    report(execution, "stopped", 20)
    assert execution.status == "stopped"


@pytest.mark.parametrize("ended", ["completed", "failed", "stopped"])
def test_an_ended_agent_ignores_any_report(ended: str) -> None:
    execution = an_execution(status=ended)
    report(execution, "running", 50, cannot_restart_reason="whatever")
    assert execution.status == ended and new_events(execution) == []


# -- the Engine ended the whole task -----------------------------------------------------------


@pytest.mark.parametrize(("engine_status", "error"), [
    ("failed", "the Engine reported the task failed"), ("stopped", None)])  # fmt: skip
def test_an_engine_ended_task_ends_its_active_agents(engine_status: str, error: str | None) -> None:
    pending, running = an_execution(1), an_execution(2, status="running")
    for execution in (pending, running):
        execution.record_engine_task_ended(engine_status)
        assert (execution.status, execution.error) == (engine_status, error)


def test_an_engine_ended_task_leaves_agents_being_retried_and_ended_agents_alone() -> None:
    waiting = awaiting_restart(an_execution(1, status="running"))
    restarted_now = an_execution(2, status="running")
    done = an_execution(3, status="completed")
    waiting.record_engine_task_ended("failed")
    restarted_now.record_engine_task_ended("failed", restarted=True)
    done.record_engine_task_ended("stopped")
    assert [e.status for e in (waiting, restarted_now, done)] == ["running", "running",
                                                                  "completed"]  # fmt: skip
    assert new_events(waiting) == new_events(restarted_now) == new_events(done) == []


@pytest.mark.parametrize("engine_status", ["pending", "running", "completed"])
def test_an_engine_task_not_failed_or_stopped_ends_no_agent(engine_status: str) -> None:
    execution = an_execution(status="running")
    execution.record_engine_task_ended(engine_status)
    assert execution.status == "running"


# -- settling the task -------------------------------------------------------------------------


def test_a_task_whose_agents_all_completed_completes() -> None:
    executions = [an_execution(1, status="completed"), an_execution(2, status="completed")]
    task = a_running_task([1, 2])
    task.settle(executions)
    assert (task.status, task.counts) == ("completed", (2, 2, 0))


def test_a_task_with_a_failed_agent_fails_naming_every_failed_agent() -> None:
    executions = [an_execution(1, name="red_agent", status="failed"),
                  an_execution(2, name="blue_agent", status="completed"),
                  an_execution(3, name="green_agent", status="failed")]  # fmt: skip
    task = a_running_task([1, 2, 3])
    task.settle(executions)
    assert task.status == "failed" and task.counts == (3, 1, 2)
    assert task.error_message == ("agent failed: red_agent (execution 1): boom;"
                                  " green_agent (execution 3): boom")  # fmt: skip


def test_a_task_with_a_stopped_agent_and_none_failed_is_stopped() -> None:
    executions = [an_execution(1, status="completed"), an_execution(2, status="stopped")]
    task = a_running_task([1, 2])
    task.settle(executions)
    assert task.status == "stopped"
    assert task.collect_events()[-1].reason == "the Engine stopped the agents"  # type: ignore[attr-defined]


def test_a_task_with_an_active_agent_stays_running_and_records_its_counts() -> None:
    executions = [an_execution(1, status="completed"), an_execution(2, status="running")]
    task = a_running_task([1, 2])
    task.settle(executions)
    assert (task.status, task.counts) == ("running", (2, 1, 0))
    assert new_events(task) == ["DeductionTask.AgentCountsChanged"]
    task.settle(executions)
    assert new_events(task) == []  # the counts did not change


def test_a_task_that_is_not_running_records_counts_but_does_not_settle() -> None:
    executions = [an_execution(1, status="completed")]
    task = a_running_task([1])
    task.request_stop("alice")
    task.collect_events()
    task.settle(executions)
    assert task.status == "stopped" and task.counts == (1, 1, 0)
    assert new_events(task) == ["DeductionTask.AgentCountsChanged"]


# -- the Engine forgot the run -----------------------------------------------------------------


def test_a_run_the_engine_does_not_know_is_recorded_once_and_cleared_when_it_answers() -> None:
    task = a_running_task([11])
    task.record_run_missing("2026-12-03T07:00:00Z", "the Engine does not know run engine-run-1")
    task.record_run_missing("2026-12-03T07:00:05Z", "the Engine does not know run engine-run-1")
    assert task.run_missing_since == "2026-12-03T07:00:00Z"
    assert new_events(task) == ["DeductionTask.EngineRunMissing"]
    task.record_engine_reachable()
    assert task.run_missing_since is None
    assert new_events(task) == ["DeductionTask.EngineReachable"]
