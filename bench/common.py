"""What every benchmark shares: a scratch database, machine facts, medians, the result file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import uuid4

from deduction.adapters.postgres import (
    create_database,
    drop_database,
    start_embedded,
    with_database,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class Result:
    name: str
    parameters: dict[str, Any]
    baseline: float
    value: float
    unit: str
    baseline_label: str
    target: str
    target_met: bool
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 4)
        return data


def server_url() -> str:
    return os.environ.get("DATABASE_URL") or start_embedded(ROOT / ".data" / "bench")


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh database for one benchmark, dropped afterwards."""
    base = server_url()
    name = f"bench_{prefix}_{uuid4().hex[:8]}"
    create_database(base, name)
    try:
        yield with_database(base, name)
    finally:
        drop_database(base, name)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gib = round(kb / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions(database_url: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pkg in ("deduction", "eventsourcing", "litestar", "msgspec", "psycopg", "aiohttp", "arq"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[pkg] = metadata.version(pkg)
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as conn:
            found["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return found


def git_revision() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return "unknown"


def write_result(result: Result, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    result.machine = result.machine or machine()
    result.extra.setdefault("revision", git_revision())
    path = directory / f"{result.name}.json"
    path.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return path


def redis_url() -> str | None:
    """The Redis to use, if one answers."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return None
    return url


@contextlib.contextmanager
def api_process_env(database_url: str, port: int) -> Iterator[dict[str, Any]]:
    """Environment of an API process as deployed: the worker runs elsewhere.

    With Redis, commands enqueue their follow-up jobs on a queue of their own that no
    worker consumes (removed afterwards); without Redis, the in-process worker talks to a
    reference Engine served by the same process.
    """
    env: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "API_PORT": str(port),
        "TASK_POLL_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    url = redis_url()
    if url is None:
        from bench.http_load import free_port

        env.update(
            REDIS_URL="",
            ENGINE_URL=f"http://127.0.0.1:{free_port()}",
            _args=["--with-engine"],
            _mode="in-process worker + reference Engine",
        )
        yield env
        return
    import redis

    tag = uuid4().hex[:8]
    queue = f"bench:{tag}"
    env.update(
        REDIS_URL=url,
        WORKER_QUEUE=queue,
        ENGINE_URL="http://127.0.0.1:9",
        _args=[],
        _mode="arq dispatch, workers elsewhere",
    )
    try:
        yield env
    finally:
        client = redis.Redis.from_url(url)
        keys = [queue, *client.scan_iter(f"*bench?{tag}*")]
        client.delete(*keys)
