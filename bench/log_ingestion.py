"""Log ingestion: Engine log lines/s into agent_execution_log vs. a raw COPY of the same rows.

Three processes, as in production: the reference Engine (`deduction engine`, high log rate),
the API (`deduction serve`: HTTP, projections, dispatch) and one worker (`deduction worker`
under arq when Redis answers; otherwise the in-process runner of `deduction serve`, and the
API and the worker are one process). Each run creates TASKS tasks of AGENTS agents through
POST /task/create; the worker submits and polls them (TASK_POLL_INTERVAL small), every poll
saving its lines in batches of LOG_BATCH_SIZE, and the projection writes the rows. Timed:
from the first create until the read table holds every line the Engine emitted for the run
(the Engine's own count, `GET /admin/stats`, once all its agents have ended).

Baseline, same run, same PostgreSQL: COPY of exactly those rows (text format, from memory)
into a fresh table made `LIKE agent_execution_log INCLUDING ALL` (same columns, same indexes).
Both start empty: after each run (its tasks ended, nothing writes their rows any more) the
log read tables are truncated, so a later run does not pay for the earlier runs' index size.

Memory: the RSS of the API and the worker are sampled every SAMPLE_S over all runs, beside
the number of rows ingested so far; reported: peak, the peak of each run, and RSS at 25 %,
50 % and 100 % of all rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Self
from uuid import uuid4

import psutil
import psycopg

from bench.common import Result, scratch_database, versions
from bench.http_load import free_port, server
from bench.task_detail_reads import API, post

AGENTS = 10
BATCH = 100  # LOG_BATCH_SIZE
SAMPLE_S = 0.25
TABLE = "agent_execution_log"
COLUMNS = ("id, agent_execution_id, deduction_task_id, timestamp, level, level_no, message,"
           " source, extra_data, create_at")  # fmt: skip


def redis_url() -> str | None:
    """REDIS_URL, or the local default, when a Redis answers there."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return url
    return None


def get_json(url: str) -> Any:
    # The reference Engine makes its lines when asked (here: every agent's, up to now), which
    # takes it tens of seconds at the mixed benchmark's 150 % load.
    with urllib.request.urlopen(url, timeout=180) as r:
        return json.loads(r.read())


def rows_stored(conn: psycopg.Connection[Any]) -> int:
    """Rows in the log read table (its per-level counts are kept by the same transaction)."""
    row = conn.execute("SELECT coalesce(sum(lines), 0) FROM agent_execution_log_count").fetchone()
    return int(row[0]) if row else 0


class Sampler:
    """RSS of the API and the worker, beside the rows ingested, every SAMPLE_S seconds."""

    def __init__(self, database_url: str, pids: dict[str, int]) -> None:
        self.url, self.procs = database_url, {k: psutil.Process(v) for k, v in pids.items()}
        self.samples: list[dict[str, Any]] = []
        self.run, self.done = 0, 0  # the run going on; rows of the runs before it
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        with self.lock:
            self._sample_now(conn)

    def _sample_now(self, conn: psycopg.Connection[Any]) -> None:
        sample: dict[str, Any] = {"t": time.perf_counter(), "run": self.run,
                                  "rows": self.done + rows_stored(conn)}  # fmt: skip
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                sample[name] = proc.memory_info().rss
        self.samples.append(sample)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                self._sample(conn)
                self._stop.wait(SAMPLE_S)
            self._sample(conn)  # the last word: every row is in

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        total = max((s["rows"] for s in self.samples), default=0)
        out: dict[str, Any] = {"samples": len(self.samples), "rows_at_end": total}
        for name in self.procs:
            series = [(s["rows"], s[name]) for s in self.samples if name in s]
            if not series:
                continue
            mib = {"peak": max(r for _, r in series) / 2**20}
            for share in (0.25, 0.5, 1.0):
                at = next((r for rows, r in series if rows >= share * total), series[-1][1])
                mib[f"at_{int(share * 100)}pct_rows"] = at / 2**20
            mib = {k: round(v, 1) for k, v in mib.items()}
            mib["growth_25_to_100pct"] = round(mib["at_100pct_rows"] - mib["at_25pct_rows"], 1)
            runs = sorted({s["run"] for s in self.samples})
            mib["peak_per_run"] = [round(max(s[name] for s in self.samples
                                             if s["run"] == r and name in s) / 2**20, 1)
                                   for r in runs]  # fmt: skip
            out[f"{name}_rss_mib"] = mib
        return out


@contextlib.contextmanager
def deployment(url: str, engine_args: list[str], mode: str, redis: str | None,
               interval: float) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The Engine, the API and (under arq) one worker, each in its own process."""
    engine_port, api_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    env = {"DATABASE_URL": url, "API_PORT": str(api_port), "ENGINE_URL": engine,
           "TASK_POLL_INTERVAL": str(interval), "LOG_BATCH_SIZE": str(BATCH),
           "LOG_LEVEL": "WARNING", "LOG_RETENTION_DAYS": "0",
           "REDIS_URL": redis if mode == "arq" else "",
           "WORKER_QUEUE": f"bench-{uuid4().hex[:8]}",
           # As docs/engine.md recommends: glibc's per-thread arenas otherwise keep raising the
           # RSS high-water mark of the command threads run after run (measured: worker peaks
           # 309, 327, 355 MiB over three runs without it; 294, 287, 300 MiB with it).
           "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}  # fmt: skip
    base = f"http://127.0.0.1:{api_port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(server(
            [sys.executable, "-m", "deduction", "engine", "--port", str(engine_port), *engine_args],
            {}, f"{engine}/admin/knobs",
        ))  # fmt: skip
        api = stack.enter_context(server([sys.executable, "-m", "deduction", "serve", "--demo"],
                                         env, f"{base}/health"))  # fmt: skip
        pids = {"api": api.pid}
        if mode == "arq":
            worker = stack.enter_context(server(
                [sys.executable, "-m", "deduction", "worker"], env, f"{base}/health"
            ))  # fmt: skip
            pids["worker"] = worker.pid
        else:
            pids["worker"] = api.pid  # the in-process runner: one process
        yield {"engine": engine, "api": base, "pids": pids}


def ingest_once(
    d: dict[str, Any], url: str, tasks: int, run: int, timeout: float
) -> dict[str, Any]:
    """Create the tasks; wait until the read table holds every line the Engine emitted."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows_before = rows_stored(conn)
        before = get_json(f"{d['engine']}/admin/stats")
        start = time.perf_counter()
        for n in range(tasks):
            post(f"{d['api']}{API}/task/create", {
                "name": f"ingest-{run}-{n}", "description": "log ingestion benchmark",
                "scheme_id": 1234567890, "env_instance_id": 9876543210,
                "agent_configs": [{"agent_meta_id": 10001 + i % 2, "side": "red",
                                   "params": {"slot": i}} for i in range(AGENTS)],
            })  # fmt: skip
        emitted: int | None = None
        while True:
            rows = rows_stored(conn) - rows_before
            if emitted is None:
                stats = get_json(f"{d['engine']}/admin/stats")
                submitted = stats["tasks"] - before["tasks"] >= tasks
                if submitted and stats["active_agents"] == 0:
                    emitted = stats["lines"] - before["lines"]  # every agent has ended: final
            if emitted is not None and rows >= emitted:
                took = time.perf_counter() - start
                break
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"only {rows} of {emitted} lines arrived within {timeout}s")
            time.sleep(0.05)
        if rows != emitted:
            raise RuntimeError(f"the read table holds {rows} lines, the Engine emitted {emitted}")
        ended = conn.execute(
            "SELECT count(*) FROM deduction_task WHERE name LIKE %s AND status = 'completed'",
            [f"ingest-{run}-%"],
        ).fetchone()[0]
    return {"lines": emitted, "seconds": took, "rate": emitted / took, "completed_tasks": ended}


def dump_rows(url: str) -> bytes:
    """The run's rows in COPY text format, as the baseline will load them."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        chunks = []
        with cur.copy(f"COPY (SELECT {COLUMNS} FROM {TABLE} ORDER BY id) TO STDOUT") as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
    return b"".join(chunks)


def copy_rate(url: str, data: bytes, lines: int) -> float:
    """Baseline: COPY the same rows into a same-shaped table; lines/s."""
    name = f"bench_copy_{uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING ALL)")
        try:
            start = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {name} ({COLUMNS}) FROM STDIN") as copy:
                view = memoryview(data)
                for i in range(0, len(view), 1 << 20):
                    copy.write(view[i : i + (1 << 20)])
            took = time.perf_counter() - start
            copied = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            if copied != lines:
                raise RuntimeError(f"copied {copied} rows, expected {lines}")
        finally:
            conn.execute(f"DROP TABLE {name}")
    return lines / took


def run(smoke: bool = False, runs: int = 3) -> Result:
    if smoke:
        tasks, log_rate, duration, runs, interval = 2, 200.0, 1.0, 1, 0.2
    else:
        tasks, log_rate, duration, interval = 20, 1000.0, 2.0, 0.2
    redis = redis_url()
    mode = "arq" if redis else "in-process"
    if mode == "arq":
        interval = 1.0  # arq's cron ticks in whole seconds
    engine_args = ["--log-rate", str(log_rate), "--duration", f"{duration}:{duration}",
                   "--fail-rate", "0"]  # fmt: skip
    ours: list[dict[str, Any]] = []
    base: list[float] = []
    with scratch_database("ingest") as url:
        with deployment(url, engine_args, mode, redis, interval) as d:
            with Sampler(url, d["pids"]) as sampler:
                for r in range(runs):
                    sampler.run = r
                    ours.append(ingest_once(d, url, tasks, r, timeout=300))
                    print(
                        f"   run {r}: {ours[-1]['lines']} lines in {ours[-1]['seconds']:.1f}s"
                        f" = {ours[-1]['rate']:,.0f} lines/s",
                        file=sys.stderr,
                        flush=True,
                    )
                    data = dump_rows(url)
                    base.append(copy_rate(url, data, ours[-1]["lines"]))
                    del data
                    with sampler.lock, psycopg.connect(url, autocommit=True) as conn:
                        # Like the baseline's table, each run writes into an empty one (this
                        # run's tasks have ended and nothing writes their rows any more).
                        conn.execute(f"TRUNCATE {TABLE}, agent_execution_log_count")
                        sampler.done += ours[-1]["lines"]
            memory = sampler.summary()
        ver = versions(url)
    value = statistics.median(x["rate"] for x in ours)
    baseline = statistics.median(base)
    return Result(
        name="log_ingestion",
        parameters={
            "tasks": tasks,
            "agents_per_task": AGENTS,
            "log_rate_per_agent": log_rate,
            "agent_seconds": duration,
            "log_batch_size": BATCH,
            "runs": runs,
            "task_poll_interval_s": interval,
            "worker": mode,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", "2"),
            "lines_per_run": [x["lines"] for x in ours],
            "engine": "reference Engine in its own process, fail_rate 0, default"
            " collide/duplicate rates",
            "timed": "first POST /task/create until the read table holds every line"
            " the Engine emitted",
        },
        baseline=baseline,
        value=value,
        unit="lines/s",
        baseline_label="raw COPY of the same rows into a same-shaped table",
        target=">= 0.30 x the COPY rate",
        target_met=value >= 0.30 * baseline,
        extra={
            "samples": [round(x["rate"], 1) for x in ours],
            "seconds": [round(x["seconds"], 2) for x in ours],
            "baseline_samples": [round(b, 1) for b in base],
            "memory": memory,
        },
        versions=ver,
    )


if __name__ == "__main__":
    from bench.common import write_result

    r = run(smoke="--smoke" in sys.argv)
    print(write_result(r))
    print(json.dumps(r.to_json(), indent=2))
