"""Task stream fan-out: commit-to-client latency at N SSE subscribers of one task, and the API
process's memory per idle subscriber, beside a bare LISTEN/NOTIFY round trip."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.common import Result, api_process_env, scratch_database, versions
from bench.http_load import free_port, server
from bench.task_detail_reads import create_tasks
from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import DeductionApp
from deduction.domain import ExecutionLog

API = "/api/v1/deduction"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def subscriber(
    session: aiohttp.ClientSession,
    url: str,
    arrivals: list[tuple[int, float]],
    joined: asyncio.Event,
) -> None:
    """Read the event stream; note when each logs message arrives."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                joined.set()
                if b'"type":"logs"' in line:
                    arrivals.append((json.loads(line[6:])["position"], time.time()))


def commit_batches(
    url: str, task_id: int, execution_id: int, count: int
) -> dict[int, tuple[float, float]]:
    """Save one log batch every 100 ms; position -> the times just before and after its save
    (the commit is between them)."""
    app = DeductionApp(env=eventsourcing_env(url))
    sent: dict[int, tuple[float, float]] = {}
    try:
        for version in range(1, count + 1):
            line = {"timestamp": "2025-11-12T10:00:00Z", "level": "INFO",
                    "message": f"bench {version}", "source": None, "extra": None}  # fmt: skip
            started = time.time()
            batch = ExecutionLog.batch(version, execution_id, task_id, [line], {})
            position = app.save(batch)[-1].notification.id
            sent[position] = (started, time.time())
            time.sleep(0.1)
    finally:
        app.close()
    return sent


def one_task(base: str) -> tuple[int, int]:
    """A new task of two agents: its id and its first execution's."""
    task_id = create_tasks(base, 1, agents=2)[0]
    with urllib.request.urlopen(f"{base}{API}/task/{task_id}", timeout=10) as r:
        return task_id, json.loads(r.read())["data"]["agent_executions"][0]["id"]


async def fan_out(url: str, base: str, pid: int, subscribers: int, events: int) -> dict[str, Any]:
    task_id, execution_id = await asyncio.to_thread(one_task, base)
    stream = f"{base}{API}/task/{task_id}/stream"
    arrivals: list[list[tuple[int, float]]] = [[] for _ in range(subscribers)]
    joined = [asyncio.Event() for _ in range(subscribers)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(0.5)
        rss_before = rss_kib(pid)
        readers = [asyncio.create_task(subscriber(session, stream, arrivals[i], joined[i]))
                   for i in range(subscribers)]  # fmt: skip
        await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joined)), 120)
        await asyncio.sleep(1.0)
        rss_idle = rss_kib(pid)
        sent = await asyncio.to_thread(commit_batches, url, task_id, execution_id, events)
        await asyncio.sleep(1.0)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    received = [(p, t) for got in arrivals for p, t in got if p in sent]
    return {
        "latencies_ms": [(t - sent[p][0]) * 1000 for p, t in received],
        "p50_after_save_returned_ms": round(
            statistics.median((t - sent[p][1]) * 1000 for p, t in received), 2
        ),
        "expected": subscribers * events,
        "rss_per_subscriber_kib": (rss_idle - rss_before) / subscribers,
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
    }


def notify_round_trips(url: str, count: int) -> list[float]:
    """Bare LISTEN/NOTIFY: the time from a NOTIFY's commit to its arrival, in ms."""
    out = []
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(url, autocommit=True) as sender:  # fmt: skip
        listener.execute("LISTEN bench_round_trip")
        for i in range(count):
            started = time.time()
            sender.execute("SELECT pg_notify('bench_round_trip', %s)", [str(i)])
            next(listener.notifies(timeout=5))
            out.append((time.time() - started) * 1000)
            time.sleep(0.01)
    return out


def run(smoke: bool = False, subscribers: int | None = None, events: int | None = None) -> Result:
    subs = subscribers or (20 if smoke else 1000)
    count = events or (3 if smoke else 30)
    with scratch_database("streams") as url:
        port = free_port()
        with api_process_env(url, port) as env:
            extra, mode = env.pop("_args"), env.pop("_mode")
            env.update(STREAM_MAX_SUBSCRIBERS=str(subs + 10), STREAM_HEARTBEAT="30")
            args = [sys.executable, "-m", "deduction", "serve", "--demo", *extra]
            with server(args, env, f"http://127.0.0.1:{port}/health") as proc:
                got = asyncio.run(fan_out(url, f"http://127.0.0.1:{port}", proc.pid, subs, count))
        bare = notify_round_trips(url, max(50, count))
        ver = versions(url)
    lat = got.pop("latencies_ms")
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    per_sub = got["rss_per_subscriber_kib"]
    return Result(
        name="stream_fanout",
        parameters={
            "subscribers": subs,
            "events": count,
            "event_interval_s": 0.1,
            "transport": "SSE, aiohttp client in one process",
            "api_process": mode,
        },
        baseline=percentile(bare, 0.99),
        value=p99,
        unit="ms p99 commit-to-client",
        baseline_label="bare LISTEN/NOTIFY round trip p99",
        target="p99 <= 100 ms at 1,000 subscribers; <= 50 KiB RSS per idle subscriber",
        target_met=p99 <= 100 and per_sub <= 50 and len(lat) == got["expected"],
        higher_is_better=False,
        extra={
            "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2),
            "received": len(lat),
            "baseline_p50_ms": round(statistics.median(bare), 3),
            **got,
        },
        versions=ver,
    )


if __name__ == "__main__":
    r = run(subscribers=int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(json.dumps(r.to_json(), indent=2, default=str))
