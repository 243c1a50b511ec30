"""Projection rebuild: events/s replayed into all read tables vs. reading the same events."""

from __future__ import annotations

import asyncio
import time

import psycopg

from bench.common import Result, scratch_database, versions
from bench.workload import load_events
from deduction.projections.runner import EVENTS_TABLE, rebuild

PAGE = 5000


def read_only(database_url: str) -> float:
    """Baseline: fetch every notification in pages, no decoding, no writes; events/s."""
    start, position, n = time.perf_counter(), 0, 0
    with psycopg.connect(database_url) as conn:
        while True:
            rows = conn.execute(
                f"SELECT notification_id, originator_id, originator_version, topic, state"
                f" FROM {EVENTS_TABLE} WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                [position, PAGE],
            ).fetchall()
            if not rows:
                break
            position, n = rows[-1][0], n + len(rows)
    return n / (time.perf_counter() - start)


def run(smoke: bool = False, runs: int = 3) -> Result:
    events = 3_000 if smoke else 1_000_000
    runs = 1 if smoke else runs
    with scratch_database("rebuild") as url:
        written = load_events(url, events)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {EVENTS_TABLE}")
        baselines, values = [], []
        for _ in range(runs):
            baselines.append(read_only(url))
            start = time.perf_counter()
            applied = asyncio.run(rebuild(url, page_size=PAGE))
            values.append(written / (time.perf_counter() - start))
        with psycopg.connect(url) as conn:
            lines = conn.execute("SELECT count(*) FROM agent_execution_log").fetchone()[0]
        ver = versions(url)
    baselines.sort()
    values.sort()
    value = values[len(values) // 2]
    return Result(
        name="projection_rebuild",
        parameters={
            "events": written,
            "log_lines": lines,
            "page_size": PAGE,
            "runs": runs,
            "mix": "completed tasks of 10 agents: progress, status, 5 log batches of 10 lines per agent",
            "applied_per_projection": applied,
        },
        baseline=baselines[len(baselines) // 2],
        value=value,
        unit="events/s",
        baseline_label="read the same notifications, no processing",
        target=">= 20,000 events/s",
        target_met=value >= 20_000,
        extra={"samples": values, "baseline_samples": baselines},
        versions=ver,
    )


if __name__ == "__main__":
    from bench.common import write_result

    r = run()
    print(write_result(r))
    print(r.to_json())
