"""A worker process rides out its stores going away: Redis shut down and started again, and
PostgreSQL restarted with `-m immediate`, while a task runs. Both servers are the test's own
(temporary directories, free ports), so restarting them disturbs nobody."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from bench.soak.servers import OwnPostgres, OwnRedis

from deduction.adapters.postgres import create_database, with_database
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.bootstrap import open_dispatch, open_services
from tests.support.api import TASK, Api, create_task_id, serve_api, settings_for, task_detail
from tests.support.engine import LiveEngine, logs_match
from tests.support.waits import wait_until
from tests.support.workers import Workers

pytestmark = pytest.mark.redis
RUNNING = {"duration_min": 12, "duration_max": 14, "log_rate": 5.0}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    server = OwnPostgres(tmp_path / "postgres")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queue() -> str:
    return f"dtest:{uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def api_and_worker(
    db_url: str, redis_url: str, queue: str, live: LiveEngine, logs: Path
) -> AsyncIterator[tuple[Api, Workers]]:
    """The API (enqueueing to `redis_url`) and one `deduction worker` process."""
    settings = settings_for(db_url, engine_url=live.url, redis_url=redis_url, worker_queue=queue)
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, WORKER_QUEUE=queue, ENGINE_URL=live.url,
               ENGINE_TIMEOUT="1", TASK_POLL_INTERVAL="1", LOG_LEVEL="INFO")  # fmt: skip
    workers = Workers(env, logs)
    try:
        async with open_services(settings) as s, open_dispatch(s), serve_api(s) as api:
            position = await s.run_sync(load_catalog, s.app, demo_catalog())
            assert await s.runner.wait_for(position, 10)
            await workers.started(workers.start())
            yield api, workers
    finally:
        workers.stop_all()


async def running_with_agents(api: Api, task_id: int) -> None:
    async def logging() -> bool:
        detail = await task_detail(api, task_id)
        return detail["status"] == "running" and all(
            a["engine_agent_id"] for a in detail["agent_executions"])  # fmt: skip

    await wait_until(logging, timeout=20)


async def completed(api: Api, task_id: int, workers: Workers) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        assert workers.procs[0].poll() is None, "the worker exited:\n" + workers.log(0)[-3000:]
        status, body = await api.call("GET", f"{TASK}/{task_id}")
        assert status in (200, 503), body  # 503 while the database is away, never a 500
        return body["data"] if status == 200 and body["data"]["status"] == "completed" else None

    return await wait_until(done, timeout=60, interval=0.3)


@pytest.mark.parametrize("live", [RUNNING], indirect=True)
async def test_a_worker_rides_out_redis_going_away_for_five_seconds(
    db_url: str, own_redis: OwnRedis, queue: str, live: LiveEngine, tmp_path: Path
) -> None:
    async with api_and_worker(db_url, own_redis.url, queue, live, tmp_path) as (api, workers):
        task_id = await create_task_id(api, "redis-outage")
        await running_with_agents(api, task_id)
        own_redis.stop()  # SHUTDOWN NOSAVE: the queue and every key are gone
        await asyncio.sleep(5)
        own_redis.start()
        task = await completed(api, task_id, workers)
        await wait_until(lambda: logs_match(api, live, task), timeout=15)
        assert workers.procs[0].poll() is None
        assert live.engine.stats["runs"] == 1
        log = workers.log(0)
        assert "worker.redis_unavailable" in log and "worker.redis_back" in log
        client = aioredis.from_url(own_redis.url)
        assert await client.exists(f"{queue}:health-check")  # it is working again, not idle
        await client.aclose()


@pytest.mark.parametrize("live", [RUNNING], indirect=True)
async def test_a_worker_rides_out_redis_refusing_writes(
    db_url: str, own_redis: OwnRedis, queue: str, live: LiveEngine, tmp_path: Path
) -> None:
    """Redis answering errors (here out of memory) rather than dropping the connection: every
    enqueue, including the sweep's, fails with an error reply for a while."""
    async with api_and_worker(db_url, own_redis.url, queue, live, tmp_path) as (api, workers):
        task_id = await create_task_id(api, "redis-refusing")
        await running_with_agents(api, task_id)
        client = aioredis.from_url(own_redis.url)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")
        await asyncio.sleep(4)  # several sweeps' worth of refused enqueues
        await client.config_set("maxmemory", "0")
        await client.aclose()
        task = await completed(api, task_id, workers)
        await wait_until(lambda: logs_match(api, live, task), timeout=15)
        assert workers.procs[0].poll() is None
        assert "worker.redis_unavailable" in workers.log(0)


@pytest.mark.parametrize("live", [RUNNING], indirect=True)
async def test_a_worker_rides_out_an_immediate_postgres_restart(
    own_postgres: OwnPostgres, redis_url: str, queue: str, live: LiveEngine, tmp_path: Path
) -> None:
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(own_postgres.url, name)
    db_url = with_database(own_postgres.url, name)
    async with api_and_worker(db_url, redis_url, queue, live, tmp_path) as (api, workers):
        task_id = await create_task_id(api, "postgres-restart")
        await running_with_agents(api, task_id)
        await asyncio.to_thread(own_postgres.restart)
        await asyncio.sleep(1)
        await asyncio.to_thread(own_postgres.restart)  # twice: a reconnected pool is cut again
        task = await completed(api, task_id, workers)
        await wait_until(lambda: logs_match(api, live, task), timeout=15)
        assert workers.procs[0].poll() is None
        assert live.engine.stats["runs"] == 1
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"*{queue}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.mark.parametrize("live", [{"duration_min": 2, "duration_max": 3}], indirect=True)
async def test_the_api_starts_and_takes_commands_while_redis_is_down(
    db_url: str, own_redis: OwnRedis, queue: str, live: LiveEngine, tmp_path: Path
) -> None:
    own_redis.stop()
    settings = settings_for(db_url, engine_url=live.url, redis_url=own_redis.url,
                            worker_queue=queue)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(DATABASE_URL=db_url, REDIS_URL=own_redis.url, WORKER_QUEUE=queue,
               ENGINE_URL=live.url, ENGINE_TIMEOUT="1", TASK_POLL_INTERVAL="1")  # fmt: skip
    workers = Workers(env, tmp_path)
    try:
        async with open_services(settings) as s, open_dispatch(s), serve_api(s) as api:
            position = await s.run_sync(load_catalog, s.app, demo_catalog())
            assert await s.runner.wait_for(position, 10)
            task_id = await create_task_id(api, "redis-down")  # saved; the enqueue is logged
            own_redis.start()
            await workers.started(workers.start())  # the sweep finds the task in the tables
            await completed(api, task_id, workers)
    finally:
        workers.stop_all()


@pytest.mark.parametrize("live", [{"duration_min": 2, "duration_max": 3}], indirect=True)
async def test_a_worker_started_while_postgres_is_down_waits_for_it(
    own_postgres: OwnPostgres, redis_url: str, queue: str, live: LiveEngine, tmp_path: Path
) -> None:
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(own_postgres.url, name)
    db_url = with_database(own_postgres.url, name)
    settings = settings_for(db_url, engine_url=live.url, redis_url=redis_url, worker_queue=queue)
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, WORKER_QUEUE=queue, ENGINE_URL=live.url,
               ENGINE_TIMEOUT="1", TASK_POLL_INTERVAL="1")  # fmt: skip
    workers = Workers(env, tmp_path)
    try:
        async with open_services(settings) as s, open_dispatch(s), serve_api(s) as api:
            position = await s.run_sync(load_catalog, s.app, demo_catalog())
            assert await s.runner.wait_for(position, 10)
            task_id = await create_task_id(api, "worker-waits")
            await asyncio.to_thread(own_postgres.stop, False)
            workers.start()

            async def waiting() -> bool:
                assert workers.procs[0].poll() is None, workers.log(0)[-3000:]
                return "worker.database_unavailable" in workers.log(0)

            await wait_until(waiting, timeout=30, interval=0.2)
            await asyncio.sleep(2)
            await asyncio.to_thread(own_postgres.start)
            await workers.started(0)
            await completed(api, task_id, workers)
    finally:
        workers.stop_all()
        client = aioredis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=f"*{queue}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
