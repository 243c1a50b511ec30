"""Poll capacity: one worker process, N running tasks x 10 agents on the reference Engine.

Measured: the wall time of one full poll cycle -- the sweep, then for every running task its
status, progress and the logs of its active agents, and one save() per task -- through the
real worker path (the in-process job runner of `deduction serve`: sweep -> poll_task jobs ->
TaskMonitor -> HttpEngine -> EngineReports). The Engine is `deduction engine` in its own
process, agents running for the whole benchmark at the default 2 log lines/s.

Set-up (not timed): each task is made by the real aggregates (task, name claim, executions),
submitted to the reference Engine over HTTP with its idempotency key, recorded as submitted and
running, and its events are written with COPY (as bench/workload.py does). A first, untimed
cycle pairs the agents; then cycles start every TASK_POLL_INTERVAL, as the sweep would.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil
import psycopg

from bench.common import Result, scratch_database, versions
from bench.http_load import free_port, server
from deduction.adapters.worker import InProcessWorker
from deduction.application.services import Services
from deduction.bootstrap import open_services, open_worker_context
from deduction.config import Settings
from deduction.domain import AgentExecution, DeductionTask, TaskName
from deduction.domain.ids import new_id
from deduction.logging import configure_logging
from deduction.projections.runner import EVENTS_TABLE, head_position

INTERVAL = 5.0  # TASK_POLL_INTERVAL, the baseline
AGENTS = 10


def engine_command(port: int) -> list[str]:
    return [sys.executable, "-m", "deduction", "engine", "--port", str(port),
            "--duration", "3600:3600", "--fail-rate", "0", "--log-rate", "2"]  # fmt: skip


async def settle(services: Services, timeout: float = 300) -> None:
    """Wait until the read tables include every event saved so far."""
    async with await psycopg.AsyncConnection.connect(services.database_url,
                                                     autocommit=True) as conn:  # fmt: skip
        head = await head_position(conn)
    if not await services.runner.wait_for(head, timeout):
        raise RuntimeError("the read tables did not catch up")


async def add_running_tasks(services: Services, engine_url: str, count: int) -> None:
    """`count` tasks of AGENTS agents, submitted to the Engine and recorded as running."""
    app = services.app
    built: list[tuple[DeductionTask, list[Any]]] = []
    for _ in range(count):
        task_id = new_id()
        execution_ids = [new_id() for _ in range(AGENTS)]
        task = DeductionTask(
            task_id=task_id, name=f"poll-{task_id}", description="poll capacity benchmark",
            scheme_id=1234567890, env_instance_id=9876543210,
            scheme_snapshot={"id": 1234567890, "name": "bench", "config": {"rounds": 10}},
            env_snapshot={"id": 9876543210, "name": "local", "config": {}},
            execution_ids=execution_ids, operator="bench",
        )  # fmt: skip
        executions = [
            AgentExecution(
                execution_id=eid,
                task_id=task_id,
                seq=i,
                agent_meta_id=10001 + i % 2,
                agent_name="RedTeamAgent" if i % 2 == 0 else "BlueTeamAgent",
                agent_load="red_team_agent_v1",
                side="red" if i % 2 == 0 else "blue",
                params={"attack_strategy": "aggressive", "slot": i},
                max_retry=3,
                operator="bench",
            )
            for i, eid in enumerate(execution_ids)
        ]
        task.request_submission("system")
        built.append((task, [TaskName(name=task.name, task_id=task_id), *executions]))

    slots = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def submit(task: DeductionTask, others: list[Any]) -> None:
            payload = {
                "name": task.name, "scheme": task.scheme_snapshot, "env": task.env_snapshot,
                "idempotency_key": str(task.task_id),
                "agents": [{"agent_name": ex.agent_name, "agent_load": ex.agent_load,
                            "side": ex.side, "params": ex.params, "ref": ex.execution_id}
                           for ex in others[1:]],
            }  # fmt: skip
            async with slots, session.post(
                f"{engine_url}/engine/task/submit", json=payload,
                headers={"Idempotency-Key": str(task.task_id)},
            ) as r:  # fmt: skip
                body = await r.json()
                if r.status >= 300:
                    raise RuntimeError(f"the Engine refused a submission: {r.status} {body}")
            task.record_submitted(str(body["engine_task_id"]), engine_url)

        await asyncio.gather(*(submit(task, others) for task, others in built))

    def copy() -> None:
        columns = "(originator_id, originator_version, topic, state)"
        with (
            psycopg.connect(services.database_url, autocommit=True) as conn,
            conn.cursor().copy(f"COPY {EVENTS_TABLE} {columns} FROM STDIN") as out,
        ):
            for task, others in built:
                for agg in (task, *others):
                    for event in agg.collect_events():
                        stored = app.mapper.to_stored_event(event)
                        out.write_row((stored.originator_id, stored.originator_version,
                                           stored.topic, stored.state))  # fmt: skip

    await asyncio.to_thread(copy)
    await settle(services)


async def http_floor(services: Services, engine_url: str, concurrency: int = 64) -> float:
    """The same Engine calls as one cycle (a status per task, the logs of every agent since
    one interval ago), from this process with a bare aiohttp session and nothing else; s."""
    async with services.pool.connection() as conn:
        cur = await conn.execute("SELECT engine_task_id FROM deduction_task"
                                 " WHERE status = 'running'")  # fmt: skip
        tasks = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT engine_agent_id FROM agent_execution"
                                 " WHERE status IN ('pending', 'running')")  # fmt: skip
        agents = [r[0] for r in await cur.fetchall()]
    since = (datetime.now(UTC) - timedelta(seconds=INTERVAL)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")  # fmt: skip
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def get(path: str, params: dict[str, str] | None = None) -> None:
            async with slots, session.get(engine_url + path, params=params) as r:
                await r.read()

        start = time.perf_counter()
        await asyncio.gather(*(get(f"/engine/task/{t}/status") for t in tasks))
        await asyncio.gather(*(get(f"/engine/agent/{a}/logs", {"since": since}) for a in agents))
        return time.perf_counter() - start


def cpu_seconds(pid: int | None = None) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def cycle(worker: InProcessWorker, engine_pid: int | None = None,
                cpu: dict[str, list[float]] | None = None) -> float:  # fmt: skip
    """One sweep and every job it led to; seconds (and CPU seconds of worker and Engine)."""
    before = (cpu_seconds(), cpu_seconds(engine_pid) if engine_pid else 0.0)
    start = time.perf_counter()
    await worker.enqueue("sweep")
    await worker.idle()
    took = time.perf_counter() - start
    if cpu is not None:
        cpu["worker"].append(round(cpu_seconds() - before[0], 2))
        if engine_pid:
            cpu["engine"].append(round(cpu_seconds(engine_pid) - before[1], 2))
    return took


async def measure(database_url: str, engine_url: str, sizes: list[int], runs: int,
                  main_size: int, spacing: float, engine_pid: int | None = None,
                  ) -> dict[str, Any]:  # fmt: skip
    settings = Settings(database_url=database_url, engine_url=engine_url,
                        task_poll_interval=INTERVAL, task_poll_enabled=False,
                        log_level="WARNING")  # fmt: skip
    configure_logging("WARNING")
    cycles: dict[int, list[float]] = {}
    warmups: dict[int, float] = {}
    floors: dict[int, float] = {}
    cpu: dict[str, list[float]] = {"worker": [], "engine": []}
    async with open_services(settings) as services:
        worker = InProcessWorker(settings)
        async with open_worker_context(services, worker.enqueue) as ctx, worker.running(ctx):
            have = 0
            for size in sizes:
                setup = time.perf_counter()
                await add_running_tasks(services, engine_url, size - have)
                have = size
                print(f"   {size} tasks set up in {time.perf_counter() - setup:.1f}s",
                      file=sys.stderr, flush=True)  # fmt: skip
                warmups[size] = await cycle(worker)  # pairs the new agents
                last = time.perf_counter()
                samples = []
                for _ in range(runs if size == main_size else 1):
                    await asyncio.sleep(max(0.0, last + spacing - time.perf_counter()))
                    last = time.perf_counter()
                    samples.append(
                        await cycle(worker, engine_pid, cpu if size == main_size else None)
                    )
                cycles[size] = samples
                if size == main_size:
                    await settle(services)  # the read tables have caught up: nothing else runs
                    await asyncio.sleep(max(0.0, last + spacing - time.perf_counter()))
                    floors[size] = await http_floor(services, engine_url)
                print(
                    f"   {size} tasks: cycle {[round(s, 2) for s in samples]}s"
                    f" (first, pairing: {warmups[size]:.2f}s)",
                    file=sys.stderr,
                    flush=True,
                )
                await settle(services)
            polled = worker.done
    return {"cycles": cycles, "warmups": warmups, "jobs": polled, "http_floor": floors, "cpu": cpu}


def largest_fitting(points: list[tuple[int, float]], interval: float) -> int:
    """Task count whose cycle equals `interval`: linear interpolation between the measured
    sizes around it, or extrapolation from the last two (cycles grow linearly with tasks)."""
    points = sorted(points)
    for (n0, t0), (n1, t1) in itertools.pairwise(points):
        if t0 <= interval <= t1 and t1 > t0:
            return int(n0 + (interval - t0) * (n1 - n0) / (t1 - t0))
    (n0, t0), (n1, t1) = points[-2], points[-1]
    if t1 <= t0:
        return n1
    return int(n1 + (interval - t1) * (n1 - n0) / (t1 - t0))


def run(smoke: bool = False, runs: int = 3) -> Result:
    if smoke:
        sizes, main_size, runs, spacing = [10, 20], 20, 1, 0.2
    else:
        sizes, main_size, spacing = [125, 250, 500, 1000], 1000, INTERVAL
    with scratch_database("poll") as url:
        port = free_port()
        engine_url = f"http://127.0.0.1:{port}"
        with server(engine_command(port), {}, f"{engine_url}/admin/knobs") as engine:
            data = asyncio.run(
                measure(url, engine_url, sizes, runs, main_size, spacing, engine.pid)
            )
            with psycopg.connect(url) as conn:
                lines = conn.execute("SELECT count(*) FROM agent_execution_log").fetchone()[0]
        ver = versions(url)
    cycles = data["cycles"]
    medians = {n: statistics.median(s) for n, s in cycles.items()}
    value = medians[main_size]
    fits = largest_fitting(list(medians.items()), INTERVAL)
    return Result(
        name="poll_capacity",
        parameters={
            "tasks": main_size,
            "agents_per_task": AGENTS,
            "runs": len(cycles[main_size]),
            "task_poll_interval_s": INTERVAL,
            "sizes": sizes,
            "engine": "reference Engine in its own process, 2 log lines/s per agent,"
            " agents running throughout",
            "worker": "in-process job runner (as in `deduction serve`), one process,"
            " its projection runner included",
            "setup": "aggregates made by the domain, submitted to the Engine over HTTP,"
            " events written with COPY; one untimed pairing cycle per size",
            "engine_calls_alone": "the same Engine calls as one cycle at the main size,"
            " from a bare aiohttp session doing nothing else",
        },
        baseline=INTERVAL,
        value=value,
        unit="s",
        baseline_label="TASK_POLL_INTERVAL",
        target="cycle <= 0.5 x interval",
        target_met=value <= 0.5 * INTERVAL,
        higher_is_better=False,
        extra={
            "samples": cycles[main_size],
            "cycle_s_by_tasks": {str(n): round(t, 3) for n, t in sorted(medians.items())},
            "first_cycle_s_by_tasks": {
                str(n): round(t, 3) for n, t in sorted(data["warmups"].items())
            },
            "largest_task_count_within_interval": fits,
            "engine_calls_alone_s": round(data["http_floor"][main_size], 3),
            "cpu_s_per_cycle": data["cpu"],
            "jobs_run": data["jobs"],
            "log_lines_stored": lines,
        },
        versions=ver,
    )


if __name__ == "__main__":
    from bench.common import write_result

    r = run(smoke="--smoke" in sys.argv)
    print(write_result(r))
    print(r.to_json())
