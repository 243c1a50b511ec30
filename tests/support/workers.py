"""`deduction worker` processes for tests: started with an environment, logs in files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.services import Services
from deduction.bootstrap import open_dispatch, open_services
from tests.support.api import settings_for
from tests.support.waits import wait_until

BIN = Path(sys.executable).with_name("deduction")


class Workers:
    """`deduction worker` processes sharing one queue; their logs go to files."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> int:
        n = len(self.procs)
        out = (self.logs / f"worker{n}.log").open("wb")
        proc = subprocess.Popen([str(BIN), "worker"], env={**self.env, **env}, stdout=out,
                                stderr=out)  # fmt: skip
        self.procs.append(proc)
        return n

    def log(self, n: int) -> str:
        return (self.logs / f"worker{n}.log").read_text(errors="replace")

    async def started(self, n: int) -> None:
        async def up() -> bool:
            assert self.procs[n].poll() is None, self.log(n)
            return "worker.started" in self.log(n)

        await wait_until(up, timeout=20, interval=0.1)

    def kill(self, n: int) -> None:
        self.procs[n].send_signal(signal.SIGKILL)
        self.procs[n].wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.asynccontextmanager
async def enqueuing_api(db_url: str, engine_url: str, redis_url: str,
                        queue: str) -> AsyncIterator[Services]:  # fmt: skip
    """The API process's services with REDIS_URL set, so it only enqueues on `queue` (the
    workers run elsewhere), with the plan's catalog; the queue's keys are deleted after."""
    settings = settings_for(db_url, engine_url=engine_url, redis_url=redis_url, worker_queue=queue)
    async with open_services(settings) as s, open_dispatch(s):
        assert await s.runner.wait_for(await s.run_sync(load_catalog, s.app, demo_catalog()), 10)
        yield s
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"*{queue}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def worker_env(db_url: str, engine_url: str, redis_url: str, queue: str) -> dict[str, str]:
    """A `deduction worker`'s environment on `queue`, polling every second."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, WORKER_QUEUE=queue, ENGINE_URL=engine_url,
               ENGINE_TIMEOUT="1", TASK_POLL_INTERVAL="1", LOG_LEVEL="DEBUG")  # fmt: skip
    return env
