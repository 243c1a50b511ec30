"""Realistic event histories written straight into the event store (COPY), for benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import DeductionApp
from deduction.domain import AgentExecution, DeductionTask, ExecutionLog, TaskName
from deduction.domain.ids import new_id

LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")


def task_history(
    agents: int = 10, progress_steps: int = 10, log_batches: int = 5, lines_per_batch: int = 10
) -> Iterator[Any]:
    """The events of one task that ran to completion, made by the real aggregates."""
    task_id = new_id()
    execution_ids = [new_id() for _ in range(agents)]
    task = DeductionTask(
        task_id=task_id, name=f"bench-{task_id}", description="benchmark",
        scheme_id=1234567890, env_instance_id=9876543210, scheme_snapshot={"rounds": 10},
        env_snapshot={"region": "local"}, execution_ids=execution_ids, operator="bench",
    )  # fmt: skip
    claim = TaskName(name=task.name, task_id=task_id)
    execs = [
        AgentExecution(
            execution_id=eid,
            task_id=task_id,
            seq=i,
            agent_meta_id=10001 + i % 2,
            agent_name="RedTeamAgent",
            agent_load="red_team_agent_v1",
            side="red",
            params={"attack_strategy": "aggressive"},
            max_retry=3,
            operator="bench",
        )
        for i, eid in enumerate(execution_ids)
    ]
    task.request_submission()
    task.record_submitted(f"engine-{task_id}", "http://localhost:8080")
    yield from claim.collect_events()
    start = datetime(2025, 11, 12, 10, 30, tzinfo=UTC)
    for i, e in enumerate(execs):
        e.assign_engine_agent(f"agent-{e.execution_id}")
        e.change_status("running", "engine")
        for step in range(1, progress_steps + 1):
            e.report_progress(step * 100 // progress_steps)
        e.change_status("completed", "engine", result={"score": i})
        for b in range(log_batches):
            lines = [
                {
                    "timestamp": (start + timedelta(milliseconds=b * 1000 + n))
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "level": LEVELS[n % len(LEVELS)],
                    "message": f"agent {i} step {b}.{n}: scanning subnet",
                    "source": "network_module",
                    "extra": None,
                }
                for n in range(lines_per_batch)
            ]
            yield ExecutionLog.batch(
                b + 1, e.execution_id, task_id, lines, {"ts": lines[-1]["timestamp"]}
            )
        task.record_agent_counts(agents, i + 1, 0)
        yield from e.collect_events()
    task.change_status("completed", None, "engine")
    yield from task.collect_events()


def load_events(database_url: str, target_events: int, **shape: int) -> int:
    """Write at least `target_events` events of completed tasks; returns how many."""
    app = DeductionApp(env=eventsourcing_env(database_url))
    mapper = app.mapper
    written = 0
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while written < target_events:
                with conn.cursor().copy(
                    "COPY deduction_events (originator_id, originator_version, topic, state)"
                    " FROM STDIN"
                ) as copy:
                    for _ in range(50):
                        for event in task_history(**shape):
                            stored = mapper.to_stored_event(event)
                            copy.write_row(
                                (
                                    stored.originator_id,
                                    stored.originator_version,
                                    stored.topic,
                                    stored.state,
                                )
                            )
                            written += 1
    finally:
        app.close()
    return written
