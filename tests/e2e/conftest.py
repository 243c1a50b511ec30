"""Journeys over HTTP: the plan's catalog, the plan's task, and log lines without an Engine."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.domain import ExecutionLog
from tests.conftest import Api

TASK = "/api/v1/deduction/task"
PLAN_TASK: dict[str, Any] = {
    "name": "task_20251112_001",
    "description": "红蓝对抗演练任务",
    "scheme_id": 1234567890,
    "env_instance_id": 9876543210,
    "agent_configs": [
        {
            "agent_meta_id": 10001,
            "side": "red",
            "params": {"attack_strategy": "aggressive", "target": "192.168.1.100"},
        },
        {"agent_meta_id": 10002, "side": "blue", "params": {"defense_level": "high"}},
    ],
}


def plan_task(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PLAN_TASK)
    body.update(changes)
    return body


@pytest.fixture
async def catalog(api: Api) -> Api:
    """The API with the plan's catalog: agents 10001/10002, scheme 1234567890, env 9876543210."""
    position = await api.services.run_sync(load_catalog, api.services.app, demo_catalog())
    assert await api.services.runner.wait_for(position, 10)
    return api


async def create_task(api: Api, **changes: Any) -> dict[str, Any]:
    status, body = await api.call("POST", f"{TASK}/create", json=plan_task(**changes))
    assert status == 200, body
    detail_status, detail = await api.call("GET", f"{TASK}/{body['data']['task_id']}")
    assert detail_status == 200, detail
    return dict(detail["data"])


@pytest.fixture
async def task(catalog: Api) -> dict[str, Any]:
    """The plan's example task, created over HTTP; its detail as the API shows it."""
    return await create_task(catalog)


LEVEL_CYCLE = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)


def log_lines(count: int, start: int = 0, levels: list[str] | None = None) -> list[dict[str, Any]]:
    """Line i is at T0 + i seconds, with level levels[i % len(levels)] and message "line i"."""
    levels = levels or LEVEL_CYCLE
    return [
        {
            "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
            "level": levels[i % len(levels)],
            "message": f"line {i}",
            "source": "network_module",
            "extra": {"i": i},
        }
        for i in range(start, start + count)
    ]


async def save_logs(
    api: Api, execution_id: int, task_id: int, batches: list[list[dict[str, Any]]]
) -> None:
    """Record log batches as the worker would, and wait until the log table shows them."""
    events = [
        ExecutionLog.batch(version, execution_id, task_id, lines, {"n": version})
        for version, lines in enumerate(batches, start=1)
    ]
    recordings = await api.services.run_sync(api.services.app.save, *events)
    position = max(r.notification.id for r in recordings)
    assert await api.services.runner.wait_for(position, 10)


async def event_head(api: Api) -> int:
    """The newest notification id in the event store: unchanged means no state changed."""
    return int(await api.services.run_sync(api.services.app.recorder.max_notification_id) or 0)


async def drive_task(api: Api, task_id: int, *statuses: str) -> None:
    """Move a task through statuses as the Engine worker would record them."""

    def change() -> int:
        app = api.services.app
        task = app.get_task(task_id)
        for status in statuses:
            reason = "the Engine reported a failure" if status == "failed" else None
            task.change_status(status, reason, "engine")
        return max(r.notification.id for r in app.save(task))

    position = await api.services.run_sync(change)
    assert await api.services.runner.wait_for(position, 10)
