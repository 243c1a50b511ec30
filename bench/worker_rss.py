"""Worker memory over a long ingestion: does its RSS level off, or keep rising with the lines?

The deployment of `log_ingestion` (the reference Engine, the API and one `deduction worker`
under arq, each its own process, MALLOC_ARENA_MAX=2), fed without pause for MINUTES: a task of
AGENTS agents is created every CREATE_EVERY seconds, each agent logging LOG_RATE lines/s for
AGENT_SECONDS. The RSS of the worker and of the API is sampled beside the rows ingested.

Baseline, same run: the worker's RSS once the first minute is over (warm: its pools, caches
and arenas in use). Reported: the RSS at the end as a ratio to it, each minute's RSS, and the
slope over the second half of the run (MiB per minute and per million lines); a leak shows as
a slope that does not fall towards zero, whatever the run length.

WORKER_RSS_MINUTES sets the length (default 5). To measure another checkout's processes, run
this with PYTHONPATH=<that checkout>/src (the spawned processes inherit it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from bench.common import Result, scratch_database, versions
from bench.log_ingestion import Sampler, deployment, redis_url
from bench.task_detail_reads import API, post

AGENTS = 10
LOG_RATE = 100.0
AGENT_SECONDS = 8.0
CREATE_EVERY = 2.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def feed(d: dict[str, Any], minutes: float) -> int:
    """Create a task every CREATE_EVERY seconds for `minutes`; how many were created."""
    end, n = time.monotonic() + minutes * 60, 0
    while time.monotonic() < end:
        post(f"{d['api']}{API}/task/create", {
            "name": f"rss-{n}", "description": "worker memory benchmark",
            "scheme_id": 1234567890, "env_instance_id": 9876543210,
            "agent_configs": [{"agent_meta_id": 10001 + i % 2, "side": "red",
                               "params": {"slot": i}} for i in range(AGENTS)],
        })  # fmt: skip
        n += 1
        time.sleep(CREATE_EVERY)
    time.sleep(AGENT_SECONDS + 5)  # the last tasks end and their lines arrive
    return n


def by_minute(samples: list[dict[str, Any]], name: str) -> list[float]:
    t0 = samples[0]["t"]
    out: dict[int, float] = {}
    for s in samples:
        if name in s:
            out[int((s["t"] - t0) // 60)] = s[name] / 2**20
    return [round(out[m], 1) for m in sorted(out)]


def run(smoke: bool = False) -> Result:
    minutes = 0.3 if smoke else float(os.environ.get("WORKER_RSS_MINUTES", "5"))
    redis = redis_url()
    if redis is None:
        raise RuntimeError("this benchmark measures a `deduction worker` process: it needs Redis")
    engine_args = ["--log-rate", str(LOG_RATE), "--duration", f"{AGENT_SECONDS}:{AGENT_SECONDS}",
                   "--fail-rate", "0"]  # fmt: skip
    with scratch_database("rss") as url:
        with deployment(url, engine_args, "arq", redis, 1.0) as d:
            with Sampler(url, d["pids"]) as sampler:
                tasks = feed(d, minutes)
            samples = list(sampler.samples)
        ver = versions(url)
    t0 = samples[0]["t"]
    worker = [((s["t"] - t0) / 60, s["worker"] / 2**20) for s in samples if "worker" in s]
    warm = next((mib for m, mib in worker if m >= min(1.0, minutes / 2)), worker[0][1])
    half = [(m, mib) for m, mib in worker if m >= worker[-1][0] / 2]
    rows = [(s["rows"] / 1e6, s["worker"] / 2**20) for s in samples
            if "worker" in s and (s["t"] - t0) / 60 >= worker[-1][0] / 2]  # fmt: skip
    end = worker[-1][1]
    parameters = {
        "minutes": minutes, "tasks": tasks, "agents_per_task": AGENTS,
        "log_rate_per_agent": LOG_RATE, "agent_seconds": AGENT_SECONDS,
        "create_every_s": CREATE_EVERY, "worker": "arq",
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "2"),
        "code": os.environ.get("PYTHONPATH") or "this checkout",
    }  # fmt: skip
    return Result(
        name="worker_rss",
        parameters=parameters,
        baseline=round(warm, 1),
        value=round(end, 1),
        unit="MiB",
        baseline_label="the worker's RSS after the first minute (warm)",
        target="RSS at the end <= 1.10 x the warm RSS, and a second-half slope near zero",
        target_met=end <= 1.10 * warm,
        higher_is_better=False,
        extra={
            "rows_ingested": samples[-1]["rows"],
            "worker_rss_mib_by_minute": by_minute(samples, "worker"),
            "api_rss_mib_by_minute": by_minute(samples, "api"),
            "worker_peak_mib": round(max(m for _, m in worker), 1),
            "worker_slope_second_half_mib_per_min": round(slope(half), 2),
            "worker_slope_second_half_mib_per_million_lines": round(slope(rows), 2),
        },
        versions=ver,
    )


if __name__ == "__main__":
    from bench.common import write_result

    r = run(smoke="--smoke" in sys.argv)
    print(write_result(r))
    print(json.dumps(r.to_json(), indent=2))
