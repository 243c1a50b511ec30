"""Journeys over HTTP with the in-process worker and the reference Engine on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from deduction.application.services import Services
from tests.support.api import TASK, Api, create_task_id, task_detail, working_services
from tests.support.engine import LiveEngine, logs_match
from tests.support.waits import wait_until


@pytest.fixture
async def services(db_url: str, live: LiveEngine) -> AsyncIterator[Services]:
    """The API's services with the in-process worker sweeping every 0.1 s."""
    async with working_services(db_url, live.url) as s:
        yield s


async def _history(api: Api, task_id: int) -> list[str]:
    status, body = await api.call("GET", f"{TASK}/{task_id}/history")
    assert status == 200, body
    return [row["change_description"] for row in body["data"]]


async def test_the_plans_example_runs_to_completion(api: Api, live: LiveEngine) -> None:
    task_id = await create_task_id(api)

    async def completed() -> dict[str, Any] | None:
        detail = await task_detail(api, task_id)
        return detail if detail["status"] == "completed" else None

    task = await wait_until(completed, timeout=20)
    assert (task["total_agents"], task["completed_agents"], task["failed_agents"]) == (2, 2, 0)
    assert task["engine_task_id"] and task["engine_unreachable_since"] is None
    for agent in task["agent_executions"]:
        assert (agent["status"], agent["progress"]) == ("completed", 100)
        assert agent["engine_agent_id"] and agent["result"]["score"] >= 50
    await wait_until(lambda: logs_match(api, live, task), timeout=10)
    emitted = sum(len(lines) for lines in live.emitted(task["engine_task_id"]).values())
    status, body = await api.call("GET", f"{TASK}/{task_id}/logs")
    assert status == 200 and body["data"]["total"] == emitted
    history = await _history(api, task_id)
    assert "task running -> completed" in history
    assert live.engine.stats["runs"] == 1


@pytest.mark.parametrize("live", [{"duration_min": 60, "duration_max": 60}], indirect=True)
async def test_update_and_stop_reach_the_engine(api: Api, live: LiveEngine) -> None:
    task_id = await create_task_id(api)

    async def paired() -> dict[str, Any] | None:
        detail = await task_detail(api, task_id)
        agents = detail["agent_executions"]
        return detail if all(a["status"] == "running" for a in agents) else None

    task = await wait_until(paired, timeout=10)
    red = task["agent_executions"][0]
    status, body = await api.call("PUT", f"{TASK}/{task_id}/update", json={"agent_configs": [
        {"agent_execution_id": red["id"], "params": {"attack_strategy": "stealth"}}]})  # fmt: skip
    assert status == 200, body
    engine_red = live.engine.sim.agents[red["engine_agent_id"]]

    async def updated() -> bool:
        return engine_red.params == {"attack_strategy": "stealth", "target": "192.168.1.100"}

    await wait_until(updated, timeout=10)
    await wait_until(lambda: _has(api, task_id, "the Engine accepted the configuration update"))

    status, body = await api.call("POST", f"{TASK}/{task_id}/stop")
    assert status == 200 and body["data"]["status"] == "stopped"
    run = live.engine.sim.tasks[task["engine_task_id"]]

    async def engine_stopped() -> bool:
        return run.status(live.engine.sim.clock()) == "stopped"

    await wait_until(engine_stopped, timeout=10)
    await wait_until(lambda: _has(api, task_id, "the Engine accepted the stop"))
    await wait_until(lambda: logs_match(api, live, task), timeout=10)  # drained after the stop
    detail = await task_detail(api, task_id)
    assert detail["status"] == "stopped"
    assert {a["status"] for a in detail["agent_executions"]} == {"stopped"}


@pytest.mark.parametrize("live", [{"duration_min": 1.5, "duration_max": 1.5}], indirect=True)
async def test_engine_down_shows_unreachable_then_recovers(api: Api, live: LiveEngine) -> None:
    task_id = await create_task_id(api)
    await wait_until(lambda: _status_is(api, task_id, "running"))
    await live.stop()

    async def unreachable() -> dict[str, Any] | None:
        detail = await task_detail(api, task_id)
        return detail if detail["engine_unreachable_since"] else None

    detail = await wait_until(unreachable, timeout=10)
    assert detail["status"] == "running" and detail["engine_error"]
    await live.start()
    await wait_until(lambda: _status_is(api, task_id, "completed"), timeout=20)
    assert (await task_detail(api, task_id))["engine_unreachable_since"] is None
    history = await _history(api, task_id)
    assert any(h.startswith("the Engine is unreachable") for h in history)
    assert "the Engine is reachable again" in history


async def _has(api: Api, task_id: int, description: str) -> bool:
    return description in await _history(api, task_id)


async def _status_is(api: Api, task_id: int, status: str) -> bool:
    return (await task_detail(api, task_id))["status"] == status
