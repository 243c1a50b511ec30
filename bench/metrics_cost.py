"""GET /task/{id} (10 agents) at 8 connections: METRICS_ENABLED=true vs. false, same database,
interleaved rounds — what timing every request into its route's histogram costs."""

from __future__ import annotations

from bench.common import Result, scratch_database, versions
from bench.http_load import Load, api_server, load
from bench.task_detail_reads import API, create_tasks


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def run(smoke: bool = False, runs: int = 5) -> Result:
    seconds, runs, tasks = (2, 1, 20) if smoke else (8, runs, 200)
    on: list[Load] = []
    off: list[Load] = []
    with scratch_database("metrics") as url:
        with api_server(url, env_overrides={"METRICS_ENABLED": "true"}) as measured, \
                api_server(url, env_overrides={"METRICS_ENABLED": "false"}) as bare:  # fmt: skip
            ids = create_tasks(measured.base, tasks)
            target = ids[len(ids) // 2]
            load(f"{measured.base}{API}/task/{target}", 8, 1)  # warm both: caches, pools
            load(f"{bare.base}{API}/task/{target}", 8, 1)
            for i in range(runs):  # interleaved, alternating which goes first
                pair = [(on, measured.base), (off, bare.base)]
                for into, base in pair if i % 2 == 0 else pair[::-1]:
                    into.append(load(f"{base}{API}/task/{target}", 8, seconds))
            mode = measured.mode
        ver = versions(url)
    parameters = {"connections": 8, "seconds_per_run": seconds, "runs": runs, "agents": 10,
                  "tasks_in_table": tasks, "load_tool": on[0].tool, "api_process": mode}  # fmt: skip
    rps, base_rps = median([x.requests_per_s for x in on]), median([x.requests_per_s for x in off])
    return Result(
        name="metrics_cost",
        parameters=parameters,
        baseline=base_rps,
        value=rps,
        unit="req/s",
        baseline_label="the same API with METRICS_ENABLED=false",
        target=">= 0.95 x the API without metrics",
        target_met=rps >= 0.95 * base_rps,
        extra={
            "p50_ms": median([x.p50_ms for x in on]),
            "p99_ms": median([x.p99_ms for x in on]),
            "baseline_p50_ms": median([x.p50_ms for x in off]),
            "baseline_p99_ms": median([x.p99_ms for x in off]),
            "samples": [x.__dict__ for x in on],
            "baseline_samples": [x.__dict__ for x in off],
        },
        versions=ver,
    )
