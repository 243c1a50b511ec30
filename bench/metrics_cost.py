"""GET /task/{id} (10 agents) at 8 connections: METRICS_ENABLED=true vs. false, two API processes
on one database, interleaved rounds — what timing every request into its route's histogram costs.

The figure compared is the API process's CPU time per request (psutil), which other work on
a shared machine disturbs far less than req/s; req/s of each round is kept beside it.
"""

from __future__ import annotations

from bench.common import Result, scratch_database, versions
from bench.http_load import ApiServer, Load, api_server, load
from bench.task_detail_reads import API, create_tasks, timed


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measured_round(api: ApiServer, path: str, seconds: int) -> tuple[Load, float]:
    """One load run: its figures, and the API process's CPU microseconds per request."""
    cpu_ms: list[float] = []
    run = timed(api.process.pid, f"{api.base}{path}", seconds, cpu_ms)
    return run, cpu_ms[0] * 1000


def run(smoke: bool = False, runs: int = 9) -> Result:
    seconds, runs, tasks = (2, 1, 20) if smoke else (5, runs, 200)
    on: list[tuple[Load, float]] = []
    off: list[tuple[Load, float]] = []
    with scratch_database("metrics") as url:
        with api_server(url, env_overrides={"METRICS_ENABLED": "true"}) as measured, \
                api_server(url, env_overrides={"METRICS_ENABLED": "false"}) as bare:  # fmt: skip
            ids = create_tasks(measured.base, tasks)
            path = f"{API}/task/{ids[len(ids) // 2]}"
            load(f"{measured.base}{path}", 8, 1)  # warm both: caches, pools
            load(f"{bare.base}{path}", 8, 1)
            for i in range(runs):  # interleaved, alternating which goes first
                pair = [(on, measured), (off, bare)]
                for into, api in pair if i % 2 == 0 else pair[::-1]:
                    into.append(measured_round(api, path, seconds))
            mode = measured.mode
        ver = versions(url)
    cpu, base_cpu = median([c for _, c in on]), median([c for _, c in off])
    rps_ratios = [a.requests_per_s / b.requests_per_s for (a, _), (b, _) in zip(on, off)]
    parameters = {"connections": 8, "seconds_per_run": seconds, "runs": runs, "agents": 10,
                  "tasks_in_table": tasks, "load_tool": on[0][0].tool, "api_process": mode}  # fmt: skip
    return Result(
        name="metrics_cost",
        parameters=parameters,
        baseline=base_cpu,
        value=cpu,
        unit="CPU us/request",
        baseline_label="the same API with METRICS_ENABLED=false",
        target="<= 1.05 x the API's CPU per request without metrics",
        target_met=cpu <= 1.05 * base_cpu,
        higher_is_better=False,
        extra={
            "requests_per_s": median([x.requests_per_s for x, _ in on]),
            "baseline_requests_per_s": median([x.requests_per_s for x, _ in off]),
            "requests_per_s_ratio_by_round": [round(r, 3) for r in rps_ratios],
            "requests_per_s_ratio_median": round(median(rps_ratios), 3),
            "p99_ms": median([x.p99_ms for x, _ in on]),
            "baseline_p99_ms": median([x.p99_ms for x, _ in off]),
            "cpu_us_per_request": [round(c, 1) for _, c in on],
            "baseline_cpu_us_per_request": [round(c, 1) for _, c in off],
            "samples": [x.__dict__ for x, _ in on],
            "baseline_samples": [x.__dict__ for x, _ in off],
        },
        versions=ver,
    )
