"""Admission by the Engine's load: submissions wait while it reports more than the limits,
and an Engine that offers no load figures is admitted to by the caps alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deduction.application.services import Services
from tests.support.api import Api, create_task_id, task_detail, working_services
from tests.support.engine import LiveEngine
from tests.support.waits import wait_until

STATUS = "/api/v1/deduction/engine/status"
LONG = {"duration_min": 30, "duration_max": 30}


@pytest.fixture
async def services(db_url: str, live: LiveEngine, request: pytest.FixtureRequest
                   ) -> AsyncIterator[Services]:  # fmt: skip
    settings = getattr(request, "param", {})
    async with working_services(db_url, live.url, **settings) as s:
        yield s


async def engine_status(api: Api) -> dict[str, Any]:
    status, body = await api.call("GET", STATUS)
    assert status == 200, body
    return dict(body["data"])


async def details(api: Api, ids: list[int]) -> list[dict[str, Any]]:
    return [await task_detail(api, t) for t in ids]


@pytest.mark.parametrize("live", [{**LONG, "cpu_percent": 95.0, "memory_percent": 40.0}],
                         indirect=True)  # fmt: skip
@pytest.mark.parametrize("services", [{"engine_max_cpu_percent": 80.0,
                                       "engine_max_memory_percent": 90.0}], indirect=True)  # fmt: skip
async def test_a_loaded_engine_holds_submissions_until_its_load_falls(
    api: Api, live: LiveEngine
) -> None:
    ids = [await create_task_id(api, f"held-{i}") for i in range(2)]

    async def held() -> dict[str, Any] | None:
        seen = await engine_status(api)
        return seen if seen["held_by_load"] else None

    seen = await wait_until(held, timeout=15, interval=0.1)
    assert seen["load"]["cpu_percent"] == 95.0 and seen["load"]["memory_percent"] == 40.0
    assert seen["load"]["sampled_at"] is not None
    assert (seen["max_cpu_percent"], seen["max_memory_percent"]) == (80.0, 90.0)
    assert seen["queue_length"] == 2
    await asyncio.sleep(1.5)  # many sweeps (every 0.1 s) and a fresh reading of the load
    waiting = await details(api, ids)
    assert [d["status"] for d in waiting] == ["pending", "pending"]
    assert [d["queue_position"] for d in waiting] == [1, 2]
    assert live.engine.stats["runs"] == 0

    live.engine.set_knobs({"cpu_percent": 30.0})

    async def both_running() -> bool:
        return all(d["status"] == "running" for d in await details(api, ids))

    await wait_until(both_running, timeout=20, interval=0.1)
    seen = await engine_status(api)
    assert seen["load"]["cpu_percent"] == 30.0 and not seen["held_by_load"]
    assert seen["queue_length"] == 0 and seen["slots"]["running_tasks"] == 2
    assert live.engine.stats["runs"] == 2


@pytest.mark.parametrize("live", [{**LONG, "load": False}], indirect=True)
@pytest.mark.parametrize("services", [{"engine_max_running_tasks": 1,
                                       "engine_max_cpu_percent": 50.0}], indirect=True)  # fmt: skip
async def test_an_engine_without_load_figures_is_admitted_to_by_the_caps_alone(
    api: Api, live: LiveEngine
) -> None:
    ids = [await create_task_id(api, f"capped-{i}") for i in range(2)]

    async def one_running() -> list[dict[str, Any]] | None:
        found = await details(api, ids)
        return found if [d["status"] for d in found] == ["running", "pending"] else None

    found = await wait_until(one_running, timeout=20, interval=0.1)
    assert found[1]["queue_position"] == 1
    seen = await engine_status(api)
    assert seen["reachable"] is True and seen["circuit"] == "closed"
    assert seen["load"] is None and not seen["held_by_load"]
    assert seen["slots"] == {"running_tasks": 1, "max_running_tasks": 1,
                             "running_agents": seen["slots"]["running_agents"],
                             "max_running_agents": None}  # fmt: skip
    assert seen["queue_length"] == 1 and seen["oldest_queued_wait_s"] >= 0
    assert live.engine.stats["load"] >= 1  # it was asked, and answered 404


async def test_engine_status_says_when_the_engine_does_not_answer(
    api: Api, live: LiveEngine
) -> None:
    await live.stop()
    seen = await engine_status(api)
    assert seen["reachable"] is False and seen["unreachable_reason"]
    assert seen["load"] is None and seen["queue_length"] == 0
