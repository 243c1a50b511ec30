"""GET /task/{id} (10 agents) at 8 connections vs. a bare Litestar + psycopg one-row handler."""

from __future__ import annotations

import json
import statistics
import sys
import urllib.request
from typing import Any

import psutil

from bench.common import Result, scratch_database, versions
from bench.http_load import Load, api_server, free_port, load, server

API = "/api/v1/deduction"


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def create_tasks(base: str, count: int, agents: int = 10) -> list[int]:
    ids = []
    for n in range(count):
        body = {
            "name": f"bench-read-{n}",
            "description": "detail read benchmark",
            "scheme_id": 1234567890,
            "env_instance_id": 9876543210,
            "agent_configs": [
                {
                    "agent_meta_id": 10001 + i % 2,
                    "side": "red" if i % 2 == 0 else "blue",
                    "params": {"attack_strategy": "aggressive", "slot": i},
                }
                for i in range(agents)
            ],
        }
        ids.append(post(f"{base}{API}/task/create", body)["data"]["task_id"])
    return ids


def timed(pid: int, url: str, seconds: int, cpu_ms: list[float]) -> Load:
    """One load run; appends the server process's CPU milliseconds per request."""
    before = psutil.Process(pid).cpu_times()
    result = load(url, 8, seconds)
    after = psutil.Process(pid).cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    cpu_ms.append(1000 * used / max(1.0, result.requests_per_s * seconds))
    return result


def run(smoke: bool = False, runs: int = 3) -> Result:
    seconds, runs, tasks = (2, 1, 20) if smoke else (10, runs, 200)
    with scratch_database("reads") as url:
        bare_port = free_port()
        ours: list[Load] = []
        bare: list[Load] = []
        our_cpu: list[float] = []
        bare_cpu: list[float] = []
        with api_server(url) as api:
            base, mode = api.base, api.mode
            ids = create_tasks(base, tasks)
            target = ids[len(ids) // 2]
            with server(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.bare_app:app",
                    "--port",
                    str(bare_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                {"DATABASE_URL": url},
                f"http://127.0.0.1:{bare_port}/health",
            ) as bare_proc:
                for _ in range(runs):  # interleaved, so drift hits both alike
                    bare.append(timed(bare_proc.pid, f"http://127.0.0.1:{bare_port}/row/{target}",
                                      seconds, bare_cpu))  # fmt: skip
                    ours.append(timed(api.process.pid, f"{base}{API}/task/{target}", seconds,
                                      our_cpu))  # fmt: skip
        ver = versions(url)
    rps = sorted(x.requests_per_s for x in ours)[len(ours) // 2]
    base_rps = sorted(x.requests_per_s for x in bare)[len(bare) // 2]
    p50 = sorted(x.p50_ms for x in ours)[len(ours) // 2]
    p99 = sorted(x.p99_ms for x in ours)[len(ours) // 2]
    return Result(
        name="task_detail_reads",
        parameters={
            "connections": 8,
            "seconds_per_run": seconds,
            "runs": runs,
            "agents": 10,
            "tasks_in_table": tasks,
            "load_tool": ours[0].tool,
            "api_process": mode,
        },
        baseline=base_rps,
        value=rps,
        unit="req/s",
        baseline_label="bare Litestar + psycopg handler, one row by primary key",
        target=">= 1.0 x bare handler req/s and p99 <= 10 ms",
        target_met=rps >= base_rps and p99 <= 10.0,
        extra={
            # CPU of the server process per answered request: steadier than req/s when other
            # work shares the machine (both servers are one process on one event loop).
            "cpu_ms_per_request": round(statistics.median(our_cpu), 3),
            "baseline_cpu_ms_per_request": round(statistics.median(bare_cpu), 3),
            "p50_ms": p50,
            "p99_ms": p99,
            "baseline_p50_ms": sorted(x.p50_ms for x in bare)[len(bare) // 2],
            "baseline_p99_ms": sorted(x.p99_ms for x in bare)[len(bare) // 2],
            "samples": [x.__dict__ for x in ours],
            "baseline_samples": [x.__dict__ for x in bare],
        },
        versions=ver,
    )
