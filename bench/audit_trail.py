"""Auditors' reads: state as of random positions of a task with 10,000 events (p99, beside the
live detail read of the same task), and chain verification speed over the store (events/s)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from bench.common import Result, scratch_database, versions
from deduction.adapters.audit_chain import (
    PARTS,
    Connect,
    create_chain_table,
    extend_chain,
    verify_store,
)
from deduction.adapters.audit_store import PostgresEventLog
from deduction.adapters.postgres import eventsourcing_env
from deduction.application.audit_chain import Verdict
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.service import AgentConfig, DeductionApp, NewTask
from deduction.config import Settings
from deduction.projections.as_of import AsOfReader
from deduction.projections.as_of_snapshots import PostgresSnapshots
from deduction.projections.runner import ProjectionRunner
from deduction.projections.tasks import PostgresTaskView


def grow_task(app: DeductionApp, events: int, name: str = "audit") -> int:
    """A task whose executions carry `events` progress reports, saved 500 at a time."""
    agents = [AgentConfig(10001 + i % 2, "red", {"slot": i}) for i in range(10)]
    task_id = app.create_task(NewTask(name, None, 1234567890, 9876543210, agents), "bench").data[
        "task_id"
    ]
    executions = [app.get_execution(i) for i in app.get_task(task_id).execution_ids]
    for ex in executions:
        ex.change_status("running", "engine")
    done = len(executions)
    while done < events:
        for ex in executions:
            for _ in range(50):
                ex.report_progress(1 + (ex.progress % 98))
        app.save(*executions)
        done += 50 * len(executions)
    return task_id


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def read_latencies(
    url: str, task_id: int, first: int, last: int, rounds: int
) -> dict[str, Any]:
    """The first as-of read of the task (it folds every event and writes the snapshots it
    passes), then as-of reads at random positions of the task beside live detail reads;
    wall and CPU milliseconds (the machine is shared: CPU time is the steadier figure)."""
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(
        url, min_size=2, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        log, tasks = PostgresEventLog(pool), PostgresTaskView(pool)
        reader = AsOfReader(log, PostgresSnapshots(pool, Settings().as_of_snapshot_every))

        async def as_of(position: int) -> None:  # what GET /task/{id}?as_of_position= does
            streams, state = await reader.at_position(task_id, position)
            assert streams is not None and state.task is not None

        out: dict[str, list[float]] = {"as_of": [], "as_of_cpu": [], "live": [], "live_cpu": []}
        first_read = await _timed(as_of(last))
        rng = random.Random(11)
        for _ in range(rounds):
            wall, cpu = await _timed(as_of(rng.randint(first, last)))
            out["as_of"].append(wall)
            out["as_of_cpu"].append(cpu)
            wall, cpu = await _timed(tasks.detail_json(task_id))
            out["live"].append(wall)
            out["live_cpu"].append(cpu)
    return {**out, "first": list(first_read)}


async def _timed(work: Awaitable[Any]) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    await work
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000


async def chain(url: str) -> float:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await create_chain_table(conn)
        started = time.perf_counter()
        await extend_chain(conn)
        return time.perf_counter() - started


def run(smoke: bool = False) -> Result:
    events, rounds, total = (500, 20, 2_000) if smoke else (10_000, 200, 1_000_000)
    with scratch_database("audit") as url:
        app = DeductionApp(env=eventsourcing_env(url))
        try:
            load_catalog(app, demo_catalog())
            first = int(app.recorder.max_notification_id() or 0) + 1
            task_id = grow_task(app, events)
            position = int(app.recorder.max_notification_id() or 0)
            # Only the measured task needs the read tables; the rest of the store is there
            # to be verified.
            runner = ProjectionRunner(url)
            asyncio.run(runner.setup())
            asyncio.run(_catch_up(runner, url))
            n = 0
            while int(app.recorder.max_notification_id() or 0) < total:
                grow_task(app, min(20_000, total), f"filler-{n}")
                n += 1
        finally:
            app.close()
        chain_s = asyncio.run(chain(url))
        reads = asyncio.run(read_latencies(url, task_id, first, position, rounds))
        with psycopg.connect(url) as conn:
            verify_s, verdict = _verify(conn, lambda: psycopg.connect(url))
            one_part_s, one_part = _verify(conn, None)  # the same search on one connection
        assert verdict.intact and one_part.intact, verdict.finding or one_part.finding
        load = os.getloadavg()[0]
        ver = versions(url)
    p99, live_p99 = percentile(reads["as_of"], 0.99), percentile(reads["live"], 0.99)
    rate = verdict.checked / verify_s
    return Result(
        name="audit_trail",
        parameters={
            "task_events": events,
            "rounds": rounds,
            "store_events": verdict.checked,
            "as_of_snapshot_every": Settings().as_of_snapshot_every,
            "as_of_positions": "uniform over the task's positions",
        },
        baseline=live_p99,
        value=p99,
        unit="ms p99",
        baseline_label="live GET /task/{id} detail read of the same task",
        target="as_of p99 <= 50 ms on 10,000 events; verify >= 100,000 events/s",
        target_met=p99 <= 50 and rate >= 100_000,
        higher_is_better=False,
        extra={
            "as_of_p50_ms": percentile(reads["as_of"], 0.5),
            "live_p50_ms": percentile(reads["live"], 0.5),
            "as_of_cpu_p50_ms": percentile(reads["as_of_cpu"], 0.5),
            "as_of_cpu_p99_ms": percentile(reads["as_of_cpu"], 0.99),
            "live_cpu_p50_ms": percentile(reads["live_cpu"], 0.5),
            "live_cpu_p99_ms": percentile(reads["live_cpu"], 0.99),
            "as_of_first_read_ms": reads["first"][0],
            "as_of_first_read_cpu_ms": reads["first"][1],
            "verify_events_per_s": round(rate),
            "verify_parts": PARTS,
            "verify_one_part_events_per_s": round(one_part.checked / one_part_s),
            "load_average_1m": round(load, 1),
            "chain_write_events_per_s": round(verdict.checked / chain_s) if chain_s else None,
        },
        versions=ver,
    )


def _verify(conn: psycopg.Connection[Any], connect: Connect | None) -> tuple[float, Verdict]:
    started = time.perf_counter()
    verdict = verify_store(conn, connect=connect)
    return time.perf_counter() - started, verdict


async def _catch_up(runner: ProjectionRunner, url: str) -> None:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await runner.catch_up(conn)
