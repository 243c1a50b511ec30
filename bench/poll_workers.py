"""Poll scale-out: one, then two worker processes on arq/Redis poll the same running tasks.

Measured: the wall time of one full poll cycle -- the sweep job, then a `poll_task` job per
running task (status, the logs of its agents, one save) -- run by one worker process, then
by two, and the worker processes' CPU time per task poll (user + system of the processes,
from the kernel: it does not count time the machine gave to others). Baseline, in the same
run: the bare Engine calls of one cycle (a status per task, the logs of every agent since one
interval ago) from a plain aiohttp session doing nothing else.

Deployment: the reference Engine in its own process (agents running throughout, 2 lines/s
each); PostgreSQL and Redis as given (REDIS_URL is required: arq mode is what scales out);
workers started as `deduction worker` would be, on a queue of their own, with the sweep left
to this process (so each cycle starts when it says) and without a projection runner (this
process runs the projections). The tasks are made as in poll_capacity (aggregates by the
domain, submitted over HTTP, events written with COPY). Each worker count gets two untimed
cycles first (they pair the agents, open the connections, and let each worker meet the tasks
whose state it keeps); cycles then start every `interval` seconds.

Reported beside the cycles: the CPU seconds of each process over each cycle (each worker, the
Engine, the PostgreSQL backends of this database, split between the workers' connections and the
rest, this process's projections), the log lines
a poll brought (they grow with the time between two polls of a task, so with the cycle once it
outlasts the interval), the jobs each worker ran, and the CPU per task of the bare Engine
calls (the floor of a poll's CPU on aiohttp).

Knobs (environment): POLL_WORKERS_TASKS (default 1000; smoke 10), POLL_WORKERS_RUNS (3; smoke
1), POLL_WORKERS_INTERVAL (5 s; smoke 1 s). Run one size alone: `python -m bench.run
poll_workers`, or `python -m bench.poll_workers` (`--smoke`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import psutil

from bench.common import Result, redis_url, scratch_database, versions
from bench.http_load import free_port, server
from bench.poll_capacity import AGENTS, add_running_tasks, engine_command, http_floor, settle
from deduction.adapters.worker.jobs import POLL_BATCH
from deduction.config import Settings
from deduction.logging import configure_logging

SPEEDUP_TARGET = 1.7
WARM_UP = 2  # untimed cycles per worker count
CPU_TARGET_MS = 5.0


def knob(name: str, default: float) -> float:
    return float(os.environ.get(f"POLL_WORKERS_{name}", default))


# -- the worker process ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _open_worker(settings: Settings, enqueue: Any) -> AsyncIterator[dict[str, Any]]:
    """What `deduction worker` opens (a worker runs no projections: this bench runs them)."""
    from deduction.bootstrap import open_services, open_worker_context

    async with (
        open_services(settings, role="worker") as services,
        open_worker_context(services, enqueue) as ctx,
    ):
        yield ctx


def worker_main() -> None:
    """`python -m bench.poll_workers worker`: an arq worker process on WORKER_QUEUE."""
    from arq.worker import func, run_worker

    from deduction.adapters.worker import job_timeout, sweep
    from deduction.adapters.worker.arq_worker import worker_loop, worker_settings
    from deduction.config import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    kwargs = worker_settings(settings, _open_worker)
    timeout = job_timeout(settings.engine_timeout)
    kwargs["functions"].append(func(sweep, name="sweep", timeout=timeout, keep_result=0))
    kwargs["health_check_key"] = f"{settings.worker_queue}:health-check:{os.getpid()}"
    kwargs["health_check_interval"] = 0.5  # the jobs each worker ran, read after the cycles
    worker_loop()  # as `deduction worker` does (arq runs on the current loop)
    run_worker(kwargs)


def spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.poll_workers", "worker"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


@contextlib.asynccontextmanager
async def workers(
    count: int, env: dict[str, str], redis: Any, queue: str
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """`count` worker processes, each started once the one before is up (workers starting
    at the same instant race to create the event store's tables)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(spawn(env))
            await wait_started(redis, queue, procs[-1])
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def jobs_run(redis: Any, queue: str, pids: list[int]) -> dict[str, int]:
    """Jobs the workers completed and failed, as their health checks say."""
    await asyncio.sleep(1.2)
    totals = {"complete": 0, "failed": 0}
    for pid in pids:
        info = (await redis.get(f"{queue}:health-check:{pid}") or b"").decode()
        for kind in totals:
            found = re.search(rf"j_{kind}=(\d+)", info)
            totals[kind] += int(found.group(1)) if found else 0
    return totals


async def wait_started(redis: Any, queue: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not await redis.exists(f"{queue}:health-check:{proc.pid}"):
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"a worker exited: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError("a worker did not start within 120 s")
        await asyncio.sleep(0.1)


# -- one cycle -------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


async def backends(conn: Any, pids: list[int]) -> tuple[list[int], list[int]]:
    """The PostgreSQL server processes serving this benchmark's database: those whose client
    is one of the worker processes `pids` (matched by the client's TCP port), and the rest
    (the projections and the reads of this process)."""
    ports = {c.laddr.port for pid in pids for c in psutil.Process(pid).net_connections("tcp")}
    cur = await conn.execute(
        "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    rows = await cur.fetchall()
    return [p for p, port in rows if port in ports], [p for p, port in rows if port not in ports]


async def lines_stored(conn: Any) -> int:
    cur = await conn.execute("SELECT coalesce(sum(lines), 0) FROM agent_execution_log_count")
    return int((await cur.fetchone())[0])


async def jobs_by_worker(redis: Any, queue: str, pids: list[int]) -> list[int]:
    """Jobs each worker has completed so far, as its health check says (written every 0.5 s)."""
    await asyncio.sleep(0.6)
    done = []
    for pid in pids:
        info = (await redis.get(f"{queue}:health-check:{pid}") or b"").decode()
        found = re.search(r"j_complete=(\d+)", info)
        done.append(int(found.group(1)) if found else 0)
    return done


async def cycle(redis: Any, queue: str, pids: list[int],
                others: dict[str, list[int]] | None = None) -> tuple[float, dict[str, float]]:  # fmt: skip
    """The sweep and every job it queued, until the queue is empty and nothing runs;
    (wall seconds, CPU seconds of each worker and of each of `others` over the cycle)."""
    groups = {**{f"worker {i + 1}": [pid] for i, pid in enumerate(pids)}, **(others or {})}
    cpu0, start = {k: cpu_seconds(v) for k, v in groups.items()}, time.perf_counter()
    await redis.enqueue_job("sweep", _job_id=f"{queue}:sweep", _queue_name=queue)
    while True:
        await asyncio.sleep(0.01)
        if await redis.zcard(queue):
            continue
        running = [
            k
            async for k in redis.scan_iter(f"arq:in-progress:{queue}:*", count=1000)
            if b":purge_logs" not in k
        ]  # a cron job's mark outlives it
        if not running and not await redis.zcard(queue):
            break
    wall = time.perf_counter() - start
    return wall, {k: cpu_seconds(v) - cpu0[k] for k, v in groups.items()}


async def measure(database_url: str, engine_url: str, redis: str, tasks: int, runs: int,
                  interval: float, engine_pid: int) -> dict[str, Any]:  # fmt: skip
    from arq.connections import RedisSettings, create_pool
    from psycopg import AsyncConnection

    from deduction.bootstrap import open_services

    queue = f"bench-poll-{uuid4().hex[:8]}"
    settings = Settings(database_url=database_url, engine_url=engine_url,
                        task_poll_interval=interval, task_poll_enabled=False,
                        log_level="WARNING")  # fmt: skip
    configure_logging("WARNING")
    env = {"DATABASE_URL": database_url, "ENGINE_URL": engine_url, "REDIS_URL": redis,
           "WORKER_QUEUE": queue, "TASK_POLL_ENABLED": "false",
           "TASK_POLL_INTERVAL": str(interval), "LOG_LEVEL": "WARNING",
           "LOG_RETENTION_DAYS": "0", "MALLOC_ARENA_MAX": "2"}  # fmt: skip
    out: dict[str, Any] = {"cycles": {}, "cpu_ms_per_poll": {}, "first_cycle": {}, "jobs": {},
                           "cpu_s_per_cycle": {}, "jobs_by_worker": {},
                           "lines_per_poll": {}, "load": {}}  # fmt: skip
    pool = await create_pool(RedisSettings.from_dsn(redis))
    try:
        async with (
            open_services(settings) as services,  # this process runs the projections
            await AsyncConnection.connect(database_url, autocommit=True) as conn,
        ):
            started = time.perf_counter()
            await add_running_tasks(services, engine_url, tasks)
            print(f"   {tasks} tasks set up in {time.perf_counter() - started:.1f}s",
                  file=sys.stderr, flush=True)  # fmt: skip
            for count in (1, 2):
                async with workers(count, env, pool, queue) as procs:
                    pids = [p.pid for p in procs]
                    # Untimed: the first pairs the agents; each worker keeps the state of the
                    # tasks it polled (D19), and with two a task goes to either, so a second
                    # one lets each meet most tasks before the timed cycles.
                    out["first_cycle"][count] = [
                        round((await cycle(pool, queue, pids))[0], 3) for _ in range(WARM_UP)
                    ]
                    await settle(services)
                    lines0, jobs0 = (
                        await lines_stored(conn),
                        await jobs_by_worker(pool, queue, pids),
                    )
                    served, rest = await backends(conn, pids)
                    others = {"engine": [engine_pid], "benchmark (projections)": [os.getpid()],
                              "postgresql (workers)": served,
                              "postgresql (projections)": rest}  # fmt: skip
                    walls, cpus, per_cycle = [], [], []
                    last = time.perf_counter()
                    for _ in range(runs):
                        await asyncio.sleep(max(0.0, last + interval - time.perf_counter()))
                        last = time.perf_counter()
                        wall, cpu = await cycle(pool, queue, pids, others)
                        walls.append(round(wall, 3))
                        worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker"))
                        cpus.append(round(1000 * worker_cpu / tasks, 2))
                        per_cycle.append({k: round(v, 2) for k, v in cpu.items()})
                    jobs1 = await jobs_by_worker(pool, queue, pids)
                    await settle(services)
                    polls = runs * tasks
                    out["lines_per_poll"][count] = round(
                        (await lines_stored(conn) - lines0) / polls
                    )
                    out["jobs_by_worker"][count] = [b - a for a, b in zip(jobs0, jobs1)]
                    out["cycles"][count] = walls
                    out["cpu_ms_per_poll"][count] = cpus
                    out["cpu_s_per_cycle"][count] = per_cycle
                    out["load"][count] = round(os.getloadavg()[0], 1)
                    out["jobs"][count] = done = await jobs_run(pool, queue, pids)
                    expected = (runs + WARM_UP) * (1 + -(-tasks // POLL_BATCH))  # sweeps, batches
                    if done["failed"] or done["complete"] < expected:
                        raise RuntimeError(f"{count} worker(s) ran {done} jobs, expected"
                                           f" {expected} complete")  # fmt: skip
                    print(f"   {count} worker(s): cycles {walls} s, CPU per poll {cpus} ms,"
                          f" {out['lines_per_poll'][count]} lines per poll, jobs by worker (batches of polls, sweeps)"
                          f" {out['jobs_by_worker'][count]}, CPU s per cycle {per_cycle}",
                          file=sys.stderr, flush=True)  # fmt: skip
                await asyncio.sleep(interval)
            await settle(services)  # the baseline reads the agents from the read tables
            cpu0 = cpu_seconds([os.getpid()])
            out["engine_calls_alone"] = await http_floor(services, engine_url)
            # what the same calls cost a bare aiohttp session: the floor of a poll's CPU
            out["engine_calls_cpu_ms"] = round(
                1000 * (cpu_seconds([os.getpid()]) - cpu0) / tasks, 2
            )
    finally:
        keys = [queue, *[k async for k in pool.scan_iter(f"*{queue}*")]]
        await pool.delete(*keys)
        await pool.aclose()
    return out


def run(smoke: bool = False) -> Result:
    tasks = int(knob("TASKS", 10 if smoke else 1000))
    runs = int(knob("RUNS", 1 if smoke else 3))
    interval = knob("INTERVAL", 1.0 if smoke else 5.0)
    redis = redis_url()
    if redis is None:
        raise RuntimeError("poll_workers needs Redis (REDIS_URL): arq mode is what scales out")
    with scratch_database("pollw") as url:
        port = free_port()
        engine_url = f"http://127.0.0.1:{port}"
        with server(engine_command(port), {}, f"{engine_url}/admin/knobs") as engine:
            data = asyncio.run(measure(url, engine_url, redis, tasks, runs, interval, engine.pid))
        ver = versions(url)
    one, two = (statistics.median(data["cycles"][n]) for n in (1, 2))
    cpu = {n: statistics.median(v) for n, v in data["cpu_ms_per_poll"].items()}
    speedup = one / two
    per_process = {
        n: {k: round(statistics.median(c[k] for c in cycles), 2) for k in cycles[0]}
        for n, cycles in data["cpu_s_per_cycle"].items()
    }
    # Two workers cannot end a cycle before the machine's cores have done the cycle's work:
    # the CPU of every process in the one-worker cycles, spread over all cores.
    cores = os.cpu_count() or 1
    bound = one / (sum(per_process[1].values()) / cores)
    floor = data["engine_calls_alone"]
    return Result(
        name="poll_workers",
        parameters={
            "tasks": tasks,
            "agents_per_task": AGENTS,
            "runs": runs,
            "interval_s": interval,
            "engine": "reference Engine in its own process, 2 log lines/s per agent,"
            " agents running throughout",
            "workers": "arq worker processes on one Redis queue, no projection runner in"
            " them; the sweep enqueued by the benchmark at each cycle, its polls in batches"
            " of POLL_BATCH tasks (poll_tasks) when the code has them",
            "baseline": "the same Engine calls as one cycle from a bare aiohttp session",
        },
        baseline=floor,
        value=two,
        unit="s",
        baseline_label="bare Engine calls of the cycle",
        target=f"2 workers >= {SPEEDUP_TARGET} x faster than 1; worker CPU <= {CPU_TARGET_MS}"
        " ms per task poll",
        target_met=speedup >= SPEEDUP_TARGET and max(cpu.values()) <= CPU_TARGET_MS,
        higher_is_better=False,
        extra={
            "cycle_s_one_worker": round(one, 3),
            "cycle_s_two_workers": round(two, 3),
            "speedup_two_over_one": round(speedup, 2),
            "cycle_over_engine_calls": {"1": round(one / floor, 2), "2": round(two / floor, 2)},
            "cpu_ms_per_poll": {str(n): v for n, v in cpu.items()},
            "samples": {str(n): v for n, v in data["cycles"].items()},
            "cpu_samples_ms": {str(n): v for n, v in data["cpu_ms_per_poll"].items()},
            "first_cycle_s": {str(n): v for n, v in data["first_cycle"].items()},
            "engine_calls_alone_s": round(floor, 3),
            "engine_calls_alone_cpu_ms_per_task": data["engine_calls_cpu_ms"],
            "jobs_run": {str(n): v for n, v in data["jobs"].items()},
            "jobs_by_worker": {str(n): v for n, v in data["jobs_by_worker"].items()},
            "lines_per_poll": {str(n): v for n, v in data["lines_per_poll"].items()},
            "cpu_s_per_cycle": {str(n): v for n, v in data["cpu_s_per_cycle"].items()},
            "cpu_s_per_cycle_median": {str(n): v for n, v in per_process.items()},
            "speedup_bound_by_cores": round(bound, 2),
            "load_average_1m": {str(n): v for n, v in data["load"].items()},
        },
        versions=ver,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker_main()
    else:
        from bench.common import write_result

        result = run(smoke="--smoke" in sys.argv)
        print(write_result(result))
        print(result.to_json())
