"""arq workers as real processes on real Redis: crash recovery and one poller per task."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from arq.connections import RedisSettings, create_pool

from deduction.adapters.worker import arq_enqueuer
from deduction.application.services import Services
from tests.support.admission import admissions
from tests.support.api import Api, create_task_id, task_detail
from tests.support.engine import LiveEngine, logs_match
from tests.support.waits import wait_until
from tests.support.workers import Workers, enqueuing_api, worker_env

pytestmark = pytest.mark.redis


@pytest.fixture
def queue() -> str:
    return f"dtest:{uuid4().hex[:10]}"


@pytest.fixture
async def services(
    db_url: str, live: LiveEngine, redis_url: str, queue: str
) -> AsyncIterator[Services]:
    """The API process: REDIS_URL set, so it only enqueues; the workers run elsewhere."""
    async with enqueuing_api(db_url, live.url, redis_url, queue) as s:
        yield s


@pytest.fixture
def workers(
    db_url: str, live: LiveEngine, redis_url: str, queue: str, tmp_path: Path
) -> Iterator[Workers]:
    pool = Workers(worker_env(db_url, live.url, redis_url, queue), tmp_path)
    yield pool
    pool.stop_all()


@pytest.mark.parametrize("live", [{"duration_min": 4, "duration_max": 5}], indirect=True)
async def test_a_worker_killed_mid_poll_loses_and_duplicates_nothing(
    api: Api, live: LiveEngine, workers: Workers
) -> None:
    first = workers.start()
    await workers.started(first)
    task_id = await create_task_id(api, "killed-mid-poll")

    async def logging() -> bool:
        detail = await task_detail(api, task_id)
        return detail["status"] == "running" and all(
            a["engine_agent_id"] for a in detail["agent_executions"])  # fmt: skip

    await wait_until(logging, timeout=15)
    live.engine.knobs.latency = 0.6  # every Engine call now takes a while: polls are long

    async def mid_poll() -> bool:
        return live.engine.active > 0

    await wait_until(mid_poll, timeout=10, interval=0.01)
    workers.kill(first)
    live.engine.knobs.latency = 0.0
    second = workers.start()
    await workers.started(second)

    async def completed() -> dict[str, Any] | None:
        detail = await task_detail(api, task_id)
        return detail if detail["status"] == "completed" else None

    task = await wait_until(completed, timeout=40, interval=0.2)
    await wait_until(lambda: logs_match(api, live, task), timeout=10)
    assert live.engine.stats["runs"] == 1
    assert "task.polled" in workers.log(second)


@pytest.mark.parametrize(
    "live", [{"duration_min": 2, "duration_max": 2.5, "latency": 0.1}], indirect=True
)
async def test_two_workers_never_poll_one_task_at_once(
    api: Api, live: LiveEngine, workers: Workers, redis_url: str, queue: str
) -> None:
    # A generous timeout: a call abandoned by a client-side timeout would still be running in
    # the Engine when the next poll asks, and would look like a second poller.
    for n in (workers.start(ENGINE_TIMEOUT="10"), workers.start(ENGINE_TIMEOUT="10")):
        await workers.started(n)
    task_ids = [await create_task_id(api, f"two-workers-{i}") for i in range(4)]
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    enqueue = arq_enqueuer(redis, queue)

    jitter = random.Random(5)

    async def all_done() -> bool:
        for task_id in task_ids:  # keep asking for polls: the job id lets one through at a time
            await enqueue("poll_task", task_id)
            await asyncio.sleep(jitter.uniform(0, 0.05))  # so neither worker is always first
        details = [await task_detail(api, t) for t in task_ids]
        return all(d["status"] == "completed" for d in details)

    try:
        await wait_until(all_done, timeout=40, interval=0.01)
    finally:
        await redis.aclose()
    assert set(live.engine.max_in_flight.values()) == {1}, live.engine.max_in_flight
    assert live.engine.stats["status"] > 2 * len(task_ids)
    polled = [workers.log(n).count("task.polled") for n in range(2)]
    assert all(p > 0 for p in polled), polled  # both workers took part


@pytest.mark.parametrize("live", [{"duration_min": 1.0, "duration_max": 1.5}], indirect=True)
async def test_two_workers_never_admit_more_than_the_cap(
    api: Api, live: LiveEngine, workers: Workers
) -> None:
    for n in (workers.start(ENGINE_MAX_RUNNING_TASKS="2"),
              workers.start(ENGINE_MAX_RUNNING_TASKS="2")):  # fmt: skip
        await workers.started(n)
    task_ids = [await create_task_id(api, f"capped-{i}") for i in range(6)]
    most_on_engine = 0

    async def all_done() -> bool:
        nonlocal most_on_engine
        now = live.engine.sim.clock()
        running = [t for t in live.engine.sim.tasks.values() if t.status(now) != "completed"]
        most_on_engine = max(most_on_engine, len(running))
        details = [await task_detail(api, t) for t in task_ids]
        return all(d["status"] == "completed" for d in details)

    await wait_until(all_done, timeout=90, interval=0.05)
    seen = await api.services.run_sync(admissions, api.services.app)
    assert sorted(seen.order) == sorted(task_ids)
    assert seen.most_held == 2
    assert 1 <= most_on_engine <= 2
    assert live.engine.stats["runs"] == 6
    admitted = [workers.log(n).count("task.admitted") for n in range(2)]
    assert sum(admitted) == 6, admitted
