"""DeductionTask as a state machine: replay reproduces state, terminal states absorb."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from deduction.application.transcoder import MsgspecTranscoder
from deduction.domain import (
    STATUSES,
    TERMINAL,
    DeductionTask,
    DomainError,
    IllegalTransitionError,
    TaskAlreadyEndedError,
)

ALLOWED = {
    "pending": {"running", "failed", "stopped"},
    "running": {"completed", "failed", "stopped"},
    "completed": set(),
    "failed": set(),
    "stopped": set(),
}
MAPPER: Mapper[Any] = Mapper(transcoder=MsgspecTranscoder())
operators = st.sampled_from(["alice", "bob", "engine", "system"])


def new_task() -> DeductionTask:
    return DeductionTask(
        task_id=42,
        name="task_20251112_001",
        description="红蓝对抗演练任务",
        scheme_id=1234567890,
        env_instance_id=9876543210,
        scheme_snapshot={"rounds": 3},
        env_snapshot={"region": "local"},
        execution_ids=[1, 2],
        operator="alice",
    )


def replay(events: list[Any]) -> DeductionTask:
    """Rebuild a task from its events after a round trip through the stored form."""
    aggregate = None
    for e in events:
        aggregate = MAPPER.to_domain_event(MAPPER.to_stored_event(e)).mutate(aggregate)
    assert isinstance(aggregate, DeductionTask)
    return aggregate


class TaskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.task = new_task()
        self.events: list[Any] = list(self.task.collect_events())
        self.ended_as: str | None = None

    def _keep(self) -> None:
        self.events.extend(self.task.collect_events())

    @rule(new=st.sampled_from(STATUSES), operator=operators)
    def change_status(self, new: str, operator: str) -> None:
        before = self.task.status
        try:
            self.task.change_status(new, "because", operator)
        except IllegalTransitionError:
            assert new not in ALLOWED[before]
        else:
            assert new in ALLOWED[before]
        self._keep()

    @rule(operator=operators)
    def request_stop(self, operator: str) -> None:
        before = self.task.status
        try:
            changed = self.task.request_stop(operator)
        except TaskAlreadyEndedError:
            assert before in {"completed", "failed"}
        else:
            assert changed == (before != "stopped")
            assert self.task.status == "stopped"
        self._keep()

    @rule(engine_id=st.text(min_size=1, max_size=8))
    def record_submitted(self, engine_id: str) -> None:
        try:
            self.task.record_submitted(engine_id, "http://engine")
        except DomainError:
            assert self.task.status in TERMINAL
        self._keep()

    @rule(operator=operators, params=st.dictionaries(st.text(max_size=5), st.integers()))
    def request_update(self, operator: str, params: dict[str, int]) -> None:
        try:
            self.task.request_update(
                len(self.events), [{"execution_id": 1, "params": params}], operator
            )
        except TaskAlreadyEndedError:
            assert self.task.status in TERMINAL
        self._keep()

    @precondition(lambda self: bool(self.task.pending_updates))
    @rule()
    def deliver_update(self) -> None:
        self.task.record_update_delivered(next(iter(self.task.pending_updates)))
        self._keep()

    @rule(done=st.integers(0, 2), failed=st.integers(0, 2))
    def record_counts(self, done: int, failed: int) -> None:
        self.task.record_agent_counts(2, done, failed)
        self._keep()

    @rule(reachable=st.booleans())
    def engine_connectivity(self, reachable: bool) -> None:
        if reachable:
            self.task.record_engine_reachable()
        else:
            self.task.record_engine_unreachable("2025-11-12T10:30:00Z", "connection refused")
        self._keep()

    @invariant()
    def terminal_states_absorb(self) -> None:
        if self.ended_as is not None:
            assert self.task.status == self.ended_as
        elif self.task.status in TERMINAL:
            self.ended_as = self.task.status

    @invariant()
    def replay_reproduces_state(self) -> None:
        assert vars(replay(self.events)) == vars(self.task)


TestTaskMachine = TaskMachine.TestCase
TestTaskMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_illegal_transition_names_both_states() -> None:
    """An illegal transition says which status it came from and which it wanted."""
    task = new_task()
    task.change_status("running", None, "engine")
    task.change_status("completed", None, "engine")
    with pytest.raises(IllegalTransitionError, match="'completed' to 'running'"):
        task.change_status("running", None, "engine")


def test_stop_is_idempotent_and_refused_after_completion() -> None:
    """Stopping twice records one stop; stopping a completed task is refused."""
    task = new_task()
    assert task.request_stop("alice") is True
    assert task.request_stop("alice") is False
    assert [type(e).__name__ for e in task.collect_events()] == [
        "Created",
        "StopRequested",
        "StatusChanged",
    ]
    done = new_task()
    done.change_status("running", None, "engine")
    done.change_status("completed", None, "engine")
    with pytest.raises(TaskAlreadyEndedError):
        done.request_stop("alice")
