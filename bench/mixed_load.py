"""Command latency (create, stop) while the worker ingests at 50/100/150 % of its capacity.

The deployment of log_ingestion (reference Engine, API, worker). First the ingestion capacity
is measured (lines/s, as log_ingestion times it); then, for each load, enough tasks are
created to offer that share of it for LOAD_SECONDS, and meanwhile a client creates and stops
tasks over HTTP (4 at a time) and times each call. Baseline, same run: the same commands on
the idle service. Then the service must recover by itself: every line emitted reaches the read
table and /ready answers 200. Done on the embedded server (Unix socket) and, when
DATABASE_URL is set, on that server too (the smoke size does the embedded one only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import aiohttp
import psycopg

from bench.common import ROOT, Result, versions
from bench.log_ingestion import AGENTS, deployment, get_json, ingest_once, redis_url, rows_stored
from bench.task_detail_reads import API, post
from deduction.adapters.postgres import (
    create_database,
    drop_database,
    start_embedded,
    with_database,
)

LOADS = (0.5, 1.0, 1.5)
RYW_TIMEOUT = 10.0  # READ_YOUR_WRITES_TIMEOUT default: the bound every command must meet


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    name = f"bench_mixed_{uuid4().hex[:8]}"
    create_database(server, name)
    try:
        yield with_database(server, name)
    finally:
        drop_database(server, name)


def task_body(name: str) -> dict[str, Any]:
    return {"name": name, "description": "mixed load benchmark", "scheme_id": 1234567890,
            "env_instance_id": 9876543210,
            "agent_configs": [{"agent_meta_id": 10001 + i % 2, "side": "red", "params": {"slot": i}}
                              for i in range(AGENTS)]}  # fmt: skip


async def _commands(base: str, seconds: float, prefix: str) -> dict[str, list[float]]:
    """Create then stop tasks, 4 clients at once, for `seconds`; each call's seconds."""
    took: dict[str, list[float]] = {"create": [], "stop": [], "failed": []}
    end, counter = time.perf_counter() + seconds, iter(range(10**9))
    timeout = aiohttp.ClientTimeout(total=3 * RYW_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def call(kind: str, url: str, body: Any) -> dict[str, Any] | None:
            t = time.perf_counter()
            async with s.post(url, json=body) as r:
                data = await r.json()
            took[kind if r.status == 200 else "failed"].append(time.perf_counter() - t)
            return data if r.status == 200 else None

        async def client() -> None:
            while time.perf_counter() < end:
                data = await call("create", f"{base}{API}/task/create",
                                  task_body(f"{prefix}-{next(counter)}"))  # fmt: skip
                if data:
                    await call("stop", f"{base}{API}/task/{data['data']['task_id']}/stop", None)

        await asyncio.gather(*(client() for _ in range(4)))
    return took


def latency(took: dict[str, list[float]]) -> dict[str, Any]:
    def pct(xs: list[float], q: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1) if xs else 0.0

    out: dict[str, Any] = {"failed": len(took["failed"])}
    for kind in ("create", "stop"):
        xs = took[kind]
        out[kind] = {"n": len(xs), "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99),
                     "max_ms": pct(xs, 1.0)}  # fmt: skip
    return out


def recover(d: dict[str, Any], url: str, before: dict[str, Any], rows_before: int,
            timeout: float) -> float:  # fmt: skip
    """Seconds until every line offered is in the read table and /ready answers 200."""
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() - start < timeout:
            stats = get_json(f"{d['engine']}/admin/stats")
            emitted = stats["lines"] - before["lines"]
            if stats["active_agents"] == 0 and rows_stored(conn) - rows_before >= emitted:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{d['api']}/ready", timeout=5) as r,
                ):
                    if r.status == 200:
                        return time.perf_counter() - start
            time.sleep(0.2)
    raise RuntimeError(f"the service did not recover within {timeout}s")


def under_load(d: dict[str, Any], url: str, share: float, capacity: float, log_rate: float,
               seconds: float, tag: str) -> dict[str, Any]:  # fmt: skip
    tasks = max(1, round(share * capacity / (AGENTS * log_rate)))
    with psycopg.connect(url, autocommit=True) as conn:
        rows_before = rows_stored(conn)
    before = get_json(f"{d['engine']}/admin/stats")
    for n in range(tasks):
        post(f"{d['api']}{API}/task/create", task_body(f"load-{tag}-{n}"))
    took = asyncio.run(_commands(d["api"], seconds, f"cmd-{tag}"))
    out = latency(took)
    out.update(load=share, load_tasks=tasks, offered_lines_per_s=tasks * AGENTS * log_rate,
               recovered_in_s=round(recover(d, url, before, rows_before, 300), 2))  # fmt: skip
    return out


def leg(url: str, smoke: bool) -> dict[str, Any]:
    log_rate, agent_s = (100.0, 2.0) if smoke else (1000.0, 20.0)
    seconds, capacity_tasks = (agent_s, 2) if smoke else (agent_s - 5, 20)
    redis = redis_url()
    mode = "arq" if redis else "in-process"
    engine_args = ["--log-rate", str(log_rate), "--duration", f"{agent_s}:{agent_s}",
                   "--fail-rate", "0"]  # fmt: skip
    with deployment(url, engine_args, mode, redis, 1.0 if mode == "arq" else 0.2) as d:
        with psycopg.connect(url, autocommit=True) as conn:
            rows_before = rows_stored(conn)
        before = get_json(f"{d['engine']}/admin/stats")
        idle = latency(asyncio.run(_commands(d["api"], min(seconds, 5.0), "idle")))
        # The idle phase's tasks run on: their lines must all be stored before the capacity run,
        # which counts the read table's rows against the Engine's lines from its own start.
        recover(d, url, before, rows_before, 300)
        capacity = ingest_once(d, url, capacity_tasks, 0, timeout=300)["rate"]
        loads = [under_load(d, url, s, capacity, log_rate, seconds, f"{s}")
                 for s in LOADS]  # fmt: skip
    return {
        "worker": mode,
        "log_rate_per_agent": log_rate,
        "agent_seconds": agent_s,
        "capacity_lines_per_s": round(capacity, 1),
        "idle": idle,
        "loads": loads,
    }


def run(smoke: bool = False) -> Result:
    legs: dict[str, Any] = {}
    embedded = start_embedded(ROOT / ".data" / "bench")
    with database(embedded) as url:
        legs["embedded"] = leg(url, smoke)
        ver = versions(url)
    if os.environ.get("DATABASE_URL") and not smoke:
        with database(os.environ["DATABASE_URL"]) as url:
            legs["server"] = leg(url, smoke)
    first = legs["embedded"]
    half, over = first["loads"][0], first["loads"][-1]
    value, baseline = half["create"]["p99_ms"], first["idle"]["create"]["p99_ms"]
    met = all(
        lg["loads"][0]["create"]["p99_ms"] <= 200
        and lg["loads"][0]["stop"]["p99_ms"] <= 200
        and all(
            x["failed"] == 0
            and max(x["create"]["max_ms"], x["stop"]["max_ms"]) <= RYW_TIMEOUT * 1000
            for x in lg["loads"]
        )
        for lg in legs.values()
    )
    print(f"   embedded: idle p99 {baseline} ms, 50 % p99 {value} ms,"
          f" 150 % max {max(over['create']['max_ms'], over['stop']['max_ms'])} ms",
          file=sys.stderr, flush=True)  # fmt: skip
    return Result(
        name="mixed_load",
        parameters={
            "loads": list(LOADS),
            "agents_per_task": AGENTS,
            "client_connections": 4,
            "databases": list(legs),
            "smoke": smoke,
            "timed": "each POST /task/create and POST /task/{id}/stop, read-your-writes"
            " included, while load tasks run",
        },
        baseline=max(baseline, 0.1),
        value=max(value, 0.1),
        unit="ms (create p99 at 50 % load, embedded)",
        baseline_label="create p99 on the idle service",
        target="p99 <= 200 ms at 50 %; at 150 % every command within READ_YOUR_WRITES_TIMEOUT,"
        " and the service recovers by itself",
        target_met=met,
        higher_is_better=False,
        extra={"legs": legs},
        versions=ver,
    )


if __name__ == "__main__":
    from bench.common import write_result

    r = run(smoke="--smoke" in sys.argv)
    print(write_result(r))
    print(json.dumps(r.to_json(), indent=2))
