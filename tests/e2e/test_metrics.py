"""/metrics: every documented series is served, in the Prometheus text format, and moves as a
run proceeds; a worker serves its own on METRICS_PORT; METRICS_ENABLED=false turns it off."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import aiohttp
import pytest

from deduction.application.services import Services
from deduction.bootstrap import open_services
from tests.support.api import (
    TASK,
    Api,
    create_task_id,
    free_port,
    serve_api,
    settings_for,
    task_detail,
    working_services,
)
from tests.support.engine import LiveEngine
from tests.support.metrics import Scrape, documented_series, scrape
from tests.support.plan import plan_task
from tests.support.waits import wait_until
from tests.support.workers import Workers, enqueuing_api, worker_env

# Short runs whose first lines come in a burst larger than a page: a gap is recorded.
GAPPY = {"duration_min": 1.0, "duration_max": 1.5, "burst": 30, "page_cap": 10,
         "since_inclusive": True, "cpu_percent": 12.5, "memory_percent": 34.0}  # fmt: skip
DETAIL = "/api/v1/deduction/task/{task_id}"


@pytest.fixture
async def services(db_url: str, live: LiveEngine) -> AsyncIterator[Services]:
    async with working_services(db_url, live.url, engine_max_running_tasks=1) as s:
        yield s


def family_names(s: Scrape) -> dict[str, str]:
    """Series names as the README writes them (a counter with its `_total`) -> type."""
    return {f"{n}_total" if t == "counter" else n: t for n, t in s.types.items()
            if n.startswith("deduction_")}  # fmt: skip


async def completed(api: Api, task_id: int) -> bool:
    return (await task_detail(api, task_id))["status"] == "completed"


@pytest.mark.parametrize("live", [GAPPY], indirect=True)
async def test_every_documented_series_moves_as_a_run_proceeds(api: Api, live: LiveEngine) -> None:
    url = api.base + "/metrics"
    before = await scrape(api.session, url)
    assert family_names(before) == documented_series()  # the README's table is the truth
    first = await create_task_id(api, "metrics-first")
    second = await create_task_id(api, "metrics-second")  # waits behind the first (cap 1)
    status, _ = await api.call("POST", f"{TASK}/create", json=plan_task(name="metrics-first"))
    assert status == 409

    async def queued() -> Scrape | None:
        now = await scrape(api.session, url)
        return now if now.get("deduction_queue_length") == 1 else None

    during = await wait_until(queued, timeout=20, interval=0.05)
    assert during.get("deduction_queue_oldest_wait_seconds") > 0
    await wait_until(lambda: completed(api, first), timeout=30, interval=0.1)
    await wait_until(lambda: completed(api, second), timeout=30, interval=0.1)
    after = await scrape(api.session, url)

    def moved(name: str, **labels: str) -> bool:
        return after.get(name, **labels) > before.get(name, **labels)

    http = "deduction_http_request_duration_seconds"
    assert moved(f"{http}_count", method="GET", route=DETAIL, status="200")
    assert moved(f"{http}_count", method="POST", route=f"{TASK}/create", status="409")
    assert moved(f"{http}_bucket", route=DETAIL, le="+Inf")
    assert moved(f"{http}_sum", route=DETAIL)
    routes = after.label_values(f"{http}_count", "route")
    assert not any(re.search(r"\d{6,}", r) for r in routes), routes  # no ids in labels
    commands = "deduction_command_duration_seconds_count"
    assert after.get(commands, command="create_task", outcome="ok") - before.get(
        commands, command="create_task", outcome="ok") == 2  # fmt: skip
    assert moved(commands, command="create_task", outcome="refused")
    calls = "deduction_engine_call_duration_seconds_count"
    for operation in ("submit", "status", "logs", "load"):
        assert moved(calls, operation=operation, outcome="ok"), operation
    assert after.get("deduction_engine_circuit_open") == 0
    assert moved("deduction_poll_cycle_duration_seconds_count")
    assert ("deduction_poll_lag_seconds", ()) in after.values
    jobs = "deduction_worker_job_duration_seconds_count"
    for job in ("submit_task", "poll_task", "sweep"):
        assert moved(jobs, job=job, outcome="ok"), job
    assert moved("deduction_log_lines_ingested_total")
    assert moved("deduction_log_gaps_recorded_total")
    lag = after.label_values("deduction_projection_lag_events", "projection")
    assert {"tasks", "agents", "logs", "history", "engine_load"} <= lag
    assert after.get("deduction_queue_length") == 0
    assert after.get("deduction_engine_load_percent", resource="cpu") == 12.5
    assert after.get("deduction_engine_load_percent", resource="memory") == 34.0


async def test_metrics_enabled_false_serves_no_metrics(db_url: str) -> None:
    settings = settings_for(db_url, metrics_enabled=False)
    async with open_services(settings) as s, serve_api(s) as api:
        async with api.session.get(api.base + "/metrics") as r:
            assert r.status == 404
        assert api.services.on_command is None


@pytest.fixture
def queue() -> str:
    return f"dtest:{uuid4().hex[:10]}"


@pytest.fixture
async def arq_services(db_url: str, live: LiveEngine, redis_url: str, queue: str
                       ) -> AsyncIterator[Services]:  # fmt: skip
    async with enqueuing_api(db_url, live.url, redis_url, queue) as s:
        yield s


@pytest.fixture
def workers(db_url: str, live: LiveEngine, redis_url: str, queue: str, tmp_path: Path
            ) -> Iterator[Workers]:  # fmt: skip
    pool = Workers(worker_env(db_url, live.url, redis_url, queue), tmp_path)
    yield pool
    pool.stop_all()


@pytest.mark.redis
@pytest.mark.parametrize("live", [GAPPY], indirect=True)
async def test_a_worker_serves_its_own_series_on_metrics_port(
    arq_services: Services, live: LiveEngine, workers: Workers
) -> None:
    port = free_port()
    n = workers.start(METRICS_PORT=str(port))
    await workers.started(n)
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, serve_api(arq_services) as api:
        before = await scrape(session, url)
        task_id = await create_task_id(api, "worker-metrics")
        await wait_until(lambda: completed(api, task_id), timeout=30, interval=0.1)
        async with api.services.pool.connection() as conn:
            cur = await conn.execute("SELECT sum(log_gaps) FROM agent_execution")
            recorded = (await cur.fetchone())[0]

        async def counted() -> Scrape | None:
            now = await scrape(session, url)
            return now if now.get("deduction_log_gaps_recorded_total") >= recorded else None

        after = await wait_until(counted, timeout=10, interval=0.2)
    assert "worker.metrics_served" in workers.log(n)

    def moved(name: str, **labels: str) -> bool:
        return after.get(name, **labels) > before.get(name, **labels)

    calls = "deduction_engine_call_duration_seconds_count"
    for operation in ("submit", "status", "logs"):
        assert moved(calls, operation=operation, outcome="ok"), operation
    for job in ("submit_task", "poll_task", "sweep"):
        assert moved("deduction_worker_job_duration_seconds_count", job=job, outcome="ok"), job
    assert moved("deduction_poll_cycle_duration_seconds_count")
    assert moved("deduction_log_lines_ingested_total")
    gaps = "deduction_log_gaps_recorded_total"  # as many as the run recorded (its timing decides)
    assert after.get(gaps) - before.get(gaps) == recorded
    assert after.get("deduction_engine_circuit_open") == 0
    assert after.get("deduction_http_request_duration_seconds_count") == 0  # the API's, not here
