"""Builders shared by integration tests: the plan's example task, logs, table snapshots."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.service import AgentConfig, DeductionApp, NewTask
from deduction.domain import ExecutionLog
from deduction.projections.runner import all_projections


def seed_catalog(app: DeductionApp) -> int:
    return load_catalog(app, demo_catalog())


def example_task(name: str = "task_20251112_001") -> NewTask:
    """The create request of the plan's section 3.1.1."""
    return NewTask(
        name=name,
        description="红蓝对抗演练任务",
        scheme_id=1234567890,
        env_instance_id=9876543210,
        agent_configs=[
            AgentConfig(10001, "red", {"attack_strategy": "aggressive", "target": "192.168.1.100"}),
            AgentConfig(10002, "blue", {"defense_level": "high"}),
        ],
    )


def log_lines(n: int, start: int = 0) -> list[dict[str, Any]]:
    levels = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR", "CRITICAL"]
    return [
        {
            "timestamp": f"2025-11-12T10:{(start + i) // 60 % 60:02d}:{(start + i) % 60:02d}Z",
            "level": levels[(start + i) % len(levels)],
            "message": f"line {start + i}",
            "source": "network_module" if i % 2 else None,
            "extra": {"i": start + i} if i % 3 == 0 else None,
        }
        for i in range(n)
    ]


def append_logs(
    app: DeductionApp, execution_id: int, task_id: int, batches: list[list[dict[str, Any]]]
) -> int:
    """Save log batches on the execution's log stream; returns the last position."""
    position = 0
    for batch in batches:
        last = app.recorder.select_events(
            ExecutionLog.batch(1, execution_id, task_id, [], {}).originator_id, desc=True, limit=1
        )
        version = last[0].originator_version + 1 if last else 1
        recordings = app.save(ExecutionLog.batch(version, execution_id, task_id, batch, {}))
        position = recordings[-1].notification.id
    return position


async def snapshot(conn: AsyncConnection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for p in all_projections():
        for table in p.tables:
            cur = await conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            tables[table] = await cur.fetchall()
    return tables
