"""POST /task/create (10 agents) with read-your-writes vs. saving the same aggregates directly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.common import Result, scratch_database, versions
from bench.http_load import api_server
from bench.task_detail_reads import API
from bench.workload import task_history
from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import DeductionApp

_CLIENT = """
import asyncio, json, sys, time, aiohttp
url, connections, seconds, prefix = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def body(n):
    return {"name": f"{prefix}-{n}", "description": "commands benchmark", "scheme_id": 1234567890,
            "env_instance_id": 9876543210,
            "agent_configs": [{"agent_meta_id": 10001 + i % 2, "side": "red", "params": {"slot": i}}
                              for i in range(10)]}
async def main():
    done, errors, counter = [], [], iter(range(10**9))
    end = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as s:
        async def worker():
            while time.perf_counter() < end:
                n = next(counter)
                t = time.perf_counter()
                async with s.post(url, json=body(n)) as r:
                    data = await r.json()
                if r.status != 200:
                    errors.append(data)
                    continue
                async with s.get(url.replace("/create", "/") + str(data["data"]["task_id"])) as r:
                    assert r.status == 200, "read-your-writes broken"
                done.append(time.perf_counter() - t)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        took = time.perf_counter() - start
    print(json.dumps({"tasks": len(done), "seconds": took, "errors": errors[:3], "error_count": len(errors)}))
asyncio.run(main())
"""


def direct_rate(database_url: str, count: int) -> float:
    """Baseline: the eventsourcing library saving task + name claim + 10 executions, no HTTP."""
    app = DeductionApp(env=eventsourcing_env(database_url))
    try:
        batches = []
        for _ in range(count):
            events = list(task_history(agents=10, progress_steps=0, log_batches=0))
            # creation only: the task, its name claim and its executions (what create saves)
            batches.append([e for e in events if type(e).__name__ == "Created"])
        start = time.perf_counter()
        for created in batches:
            app.save(*created)
        return count / (time.perf_counter() - start)
    finally:
        app.close()


def run(smoke: bool = False, runs: int = 3) -> Result:
    seconds, runs, direct_n = (2.0, 1, 50) if smoke else (10.0, runs, 1000)
    ours, base = [], []
    with scratch_database("commands") as url:
        with api_server(url) as api:
            for r in range(runs):
                base.append(direct_rate(url, direct_n))
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        _CLIENT,
                        f"{api.base}{API}/task/create",
                        "8",
                        str(seconds),
                        f"run{r}",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=seconds + 120,
                ).stdout
                res = json.loads(out)
                if res["error_count"]:
                    raise RuntimeError(f"{res['error_count']} failed creates: {res['errors']}")
                ours.append(res["tasks"] / res["seconds"])
        ver = versions(url)
    value, baseline = sorted(ours)[len(ours) // 2], sorted(base)[len(base) // 2]
    return Result(
        name="commands",
        parameters={
            "agents_per_task": 10,
            "connections": 8,
            "seconds_per_run": seconds,
            "runs": runs,
            "direct_saves_per_run": direct_n,
            "api_process": api.mode,
            "check": "each create is followed by GET /task/{id}, which must answer 200",
        },
        baseline=baseline,
        value=value,
        unit="tasks/s",
        baseline_label="eventsourcing app.save() of the same aggregates, one thread, no HTTP",
        target=">= 0.5 x the direct save rate",
        target_met=value >= 0.5 * baseline,
        extra={"samples": ours, "baseline_samples": base},
        versions=ver,
    )
