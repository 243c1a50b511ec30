"""Task stream fan-out: commit-to-client latency at N SSE subscribers of one task, and the API
process's memory per idle subscriber, beside a bare LISTEN/NOTIFY round trip."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httptools
import psycopg
import uvloop

from bench.common import Result, api_process_env, scratch_database, versions
from bench.http_load import free_port, server
from bench.task_detail_reads import create_tasks
from deduction.adapters.http.stream_hub import SHOWN
from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import DeductionApp
from deduction.domain import ExecutionLog
from deduction.projections.runner import READ_MODELS_CHANNEL

API = "/api/v1/deduction"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class SseReader(asyncio.Protocol):
    """One subscriber, read as cheaply as a client can: bytes parsed by httptools, each logs
    message's arrival noted in `data_received`, so the figure measures the server."""

    def __init__(
        self, request: bytes, arrivals: list[tuple[int, float]], joined: asyncio.Event
    ) -> None:
        self.request, self.arrivals, self.joined = request, arrivals, joined
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.BaseTransport | None = None
        self.tail = b""
        self.now = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.now = time.time()
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:  # httptools: the body with its chunking undone
        *records, self.tail = (self.tail + body).split(b"\n\n")
        for record in records:
            if b"\ndata: " not in record:
                continue
            self.joined.set()
            at = record.find(b'"type":"logs"')
            if at >= 0:
                start = record.index(b'"position":', at) + 11
                end = record.index(b",", start)
                self.arrivals.append((int(record[start:end]), self.now))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def subscribe(
    host: str, port: int, path: str, arrivals: list[tuple[int, float]], joined: asyncio.Event
) -> SseReader:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()  # fmt: skip
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(
        lambda: SseReader(request, arrivals, joined), host, port
    )
    return reader


def commit_batches(
    url: str, task_id: int, execution_id: int, count: int
) -> tuple[dict[int, tuple[float, float]], list[float]]:
    """Save one log batch every 100 ms; position -> the times just before and after its save
    (the commit is between them); and for each, how long until the read tables a stream shows
    had it, by the runners' NOTIFY (what a stream waits for before it reads and writes)."""
    app = DeductionApp(env=eventsourcing_env(url))
    sent: dict[int, tuple[float, float]] = {}
    readable: list[float] = []
    try:
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute(f"LISTEN {READ_MODELS_CHANNEL}")
            reached = dict(listener.execute("SELECT name, position FROM projection_tracking"))
            for version in range(1, count + 1):
                line = {"timestamp": "2025-11-12T10:00:00Z", "level": "INFO",
                        "message": f"bench {version}", "source": None, "extra": None}  # fmt: skip
                started = time.time()
                batch = ExecutionLog.batch(version, execution_id, task_id, [line], {})
                position = app.save(batch)[-1].notification.id
                sent[position] = (started, time.time())
                while min(reached.get(n, 0) for n in SHOWN) < position:
                    for n in listener.notifies(timeout=5, stop_after=1):
                        name, _, at = n.payload.partition(":")
                        reached[name] = max(reached.get(name, 0), int(at))
                readable.append((time.time() - started) * 1000)
                time.sleep(max(0.0, started + 0.1 - time.time()))
    finally:
        app.close()
    return sent, readable


def one_task(base: str) -> tuple[int, int]:
    """A new task of two agents: its id and its first execution's."""
    task_id = create_tasks(base, 1, agents=2)[0]
    with urllib.request.urlopen(f"{base}{API}/task/{task_id}", timeout=10) as r:
        return task_id, json.loads(r.read())["data"]["agent_executions"][0]["id"]


async def fan_out(url: str, base: str, pid: int, subscribers: int, events: int) -> dict[str, Any]:
    task_id, execution_id = await asyncio.to_thread(one_task, base)
    host, port = base.removeprefix("http://").split(":")
    stream = f"{API}/task/{task_id}/stream"
    arrivals: list[list[tuple[int, float]]] = [[] for _ in range(subscribers)]
    joined = [asyncio.Event() for _ in range(subscribers)]
    await asyncio.sleep(0.5)
    rss_before = rss_kib(pid)
    readers: list[SseReader] = []
    for i in range(subscribers):  # one at a time: the listen backlog is finite
        readers.append(await subscribe(host, int(port), stream, arrivals[i], joined[i]))
    await asyncio.wait_for(asyncio.gather(*(j.wait() for j in joined)), 120)
    await asyncio.sleep(1.0)
    rss_idle, cpu_before, client_before = rss_kib(pid), cpu_seconds(pid), cpu_seconds(os.getpid())
    sent, readable = await asyncio.to_thread(commit_batches, url, task_id, execution_id, events)
    await asyncio.sleep(1.0)
    cpu, client_cpu = cpu_seconds(pid) - cpu_before, cpu_seconds(os.getpid()) - client_before
    for reader in readers:
        reader.close()
    received = [(p, t) for got in arrivals for p, t in got if p in sent]
    return {
        "latencies_ms": [(t - sent[p][0]) * 1000 for p, t in received],
        "p50_after_save_returned_ms": round(
            statistics.median((t - sent[p][1]) * 1000 for p, t in received), 2
        ),
        "expected": subscribers * events,
        "readable_p50_ms": round(percentile(readable, 0.5), 2),
        "readable_p99_ms": round(percentile(readable, 0.99), 2),
        # the API's CPU per event committed (projections, read, fan-out to every subscriber):
        # steadier than the latency on a shared machine
        "api_cpu_ms_per_event": round(cpu * 1000 / events, 2),
        # the readers and the committer, on the same cores
        "client_cpu_ms_per_event": round(client_cpu * 1000 / events, 2),
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
            with (
                server(args, env, f"http://127.0.0.1:{port}/health") as proc,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                got = runner.run(fan_out(url, f"http://127.0.0.1:{port}", proc.pid, subs, count))
        bare = notify_round_trips(url, max(200, count))
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
            "transport": "SSE; one client process, uvloop, httptools-parsed asyncio protocol per subscriber",
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
