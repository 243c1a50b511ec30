"""Admission control against the reference Engine: caps, priority order, queue positions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from deduction.adapters.worker.admission import lock_key
from deduction.application.services import Services
from tests.support.admission import admissions
from tests.support.api import TASK, Api, task_detail, working_services
from tests.support.engine import LiveEngine
from tests.support.plan import plan_task
from tests.support.waits import wait_until

MIXED = ["low", "normal", "high", "low", "high", "normal"]


@pytest.fixture
async def services(db_url: str, live: LiveEngine) -> AsyncIterator[Services]:
    async with working_services(db_url, live.url, engine_max_running_tasks=2) as s:
        yield s


async def _create(api: Api, name: str, priority: str) -> int:
    status, body = await api.call(
        "POST", f"{TASK}/create", json=plan_task(name=name, priority=priority)
    )
    assert status == 200, body
    return int(body["data"]["task_id"])


def running_on_engine(live: LiveEngine) -> int:
    now = live.engine.sim.clock()
    return sum(t.status(now) in ("pending", "running") for t in live.engine.sim.tasks.values())


@pytest.mark.parametrize("live", [{"duration_min": 1.0, "duration_max": 1.5}], indirect=True)
async def test_six_tasks_under_a_cap_of_two_run_two_at_a_time_in_priority_order(
    api: Api, live: LiveEngine
) -> None:
    # The admission lock is held while the six are created: no decision sees only some of them.
    async with api.services.pool.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [lock_key(live.url)])
        ids = [await _create(api, f"capped-{i}", priority) for i, priority in enumerate(MIXED)]
        await conn.execute("SELECT pg_advisory_unlock(%s)", [lock_key(live.url)])
    most_on_engine = 0

    async def all_completed() -> bool:
        nonlocal most_on_engine
        most_on_engine = max(most_on_engine, running_on_engine(live))
        details = [await task_detail(api, t) for t in ids]
        return all(d["status"] == "completed" for d in details)

    await wait_until(all_completed, timeout=90, interval=0.05)
    seen = await api.services.run_sync(admissions, api.services.app)
    rank = {"low": 0, "normal": 1, "high": 2}
    expected = sorted(range(6), key=lambda i: (-rank[MIXED[i]], i))  # high, normal, low; FIFO
    assert seen.order == [ids[i] for i in expected]
    assert seen.most_held == 2
    assert seen.overtaken == []
    assert 1 <= most_on_engine <= 2
    assert live.engine.stats["runs"] == 6


@pytest.mark.parametrize("live", [{"duration_min": 30, "duration_max": 30}], indirect=True)
async def test_queued_tasks_wait_pending_with_their_place_until_a_slot_frees(
    api: Api, live: LiveEngine
) -> None:
    ids = [
        await _create(api, f"waiting-{i}", p)
        for i, p in enumerate(["normal", "normal", "low", "high"])
    ]

    async def two_running() -> list[dict[str, Any]] | None:
        details = [await task_detail(api, t) for t in ids]
        running = [d for d in details if d["status"] == "running"]
        return details if len(running) == 2 else None

    details = await wait_until(two_running, timeout=30)
    queued = sorted((d for d in details if d["queue_position"] is not None),
                    key=lambda d: d["queue_position"])  # fmt: skip
    assert [d["status"] for d in queued] == ["pending", "pending"]
    assert [d["queue_position"] for d in queued] == [1, 2]
    assert queued[0]["priority"] == "high" or queued[1]["priority"] == "low"
    first = next(d for d in details if d["status"] == "running")
    status, body = await api.call("POST", f"{TASK}/{first['id']}/stop")
    assert status == 200, body

    async def next_admitted() -> bool:
        return (await task_detail(api, queued[0]["id"]))["status"] == "running"

    await wait_until(next_admitted, timeout=30)
    assert (await task_detail(api, queued[1]["id"]))["queue_position"] == 1
    assert live.engine.stats["runs"] == 3
