"""A deployment's processes stay within their stated PostgreSQL connection budgets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
import redis
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict

from tests.support.api import TASK, free_port
from tests.support.engine import LiveEngine
from tests.support.plan import plan_task
from tests.support.waits import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]
BIN = Path(sys.executable).with_name("deduction")
MAX_CONNECTIONS = 100  # PostgreSQL's default


class Deployment:
    """`deduction serve` and `deduction worker` processes; their logs go to files."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        out = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([str(BIN), *args], env=self.env, stdout=out,
                                            stderr=out)  # fmt: skip

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log(name).splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                found.append(json.loads(line))
        return found

    async def started(self, name: str, event: str) -> None:
        async def up() -> bool:
            assert self.procs[name].poll() is None, self.log(name)
            return bool(self.events(name, event))

        await wait_until(up, timeout=60, interval=0.2)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def deployment(
    db_url: str, live: LiveEngine, redis_url: str, tmp_path: Path
) -> Iterator[Deployment]:
    queue = f"dtest:{uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, WORKER_QUEUE=queue, ENGINE_URL=live.url,
               TASK_POLL_INTERVAL="1", API_PORT=str(free_port()), LOG_LEVEL="INFO")  # fmt: skip
    running = Deployment(env, tmp_path)
    yield running
    running.stop_all()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def connections(server_url: str, dbname: str) -> int:
    """Connections to `dbname` (counted from another database, so this one is not)."""
    async with await AsyncConnection.connect(server_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [dbname]
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("live", [{"duration_min": 3, "duration_max": 4}], indirect=True)
async def test_the_api_and_four_workers_stay_within_their_budgets_under_100(
    deployment: Deployment, db_url: str, server_url: str
) -> None:
    """Each process logs its connection budget at start; under load (creates, list reads and
    polls of running tasks) the database never sees more connections than their sum, which
    stays under PostgreSQL's default max_connections."""
    deployment.start("api", "serve", "--demo")
    workers = [f"worker{n}" for n in range(4)]
    for name in workers:
        deployment.start(name, "worker")
    await deployment.started("api", "api.started")
    for name in workers:
        await deployment.started(name, "worker.started")
    budgets = {name: deployment.events(name, "postgres.connection_budget")[0]
               for name in ["api", *workers]}  # fmt: skip
    assert all(budgets[w]["projections"] == 0 for w in workers), budgets  # only the API's
    stated = sum(b["total"] for b in budgets.values())
    assert stated < MAX_CONNECTIONS, budgets

    base = f"http://127.0.0.1:{deployment.env['API_PORT']}{TASK}"
    dbname = str(conninfo_to_dict(db_url)["dbname"])
    seen: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def serving() -> bool:
            try:
                async with http.get(f"{base}/list") as r:
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(serving, timeout=30, interval=0.2)

        async def create(i: int) -> int:
            async with http.post(f"{base}/create", json=plan_task(name=f"budget-{i}")) as r:
                assert r.status == 200, await r.text()
                return int((await r.json())["data"]["task_id"])

        async def list_page() -> None:
            async with http.get(f"{base}/list?size=100") as r:
                assert r.status == 200, await r.text()

        task_ids = await asyncio.gather(*(create(i) for i in range(12)))
        for _ in range(15):  # reads and polls under way together
            await asyncio.gather(*(list_page() for _ in range(20)))
            seen.append(await connections(server_url, dbname))
            await asyncio.sleep(0.2)

        async def all_ran() -> bool:
            statuses = []
            for task_id in task_ids:
                async with http.get(f"{base}/{task_id}") as r:
                    statuses.append((await r.json())["data"]["status"])
            seen.append(await connections(server_url, dbname))
            return all(s in ("running", "completed", "failed") for s in statuses)

        await wait_until(all_ran, timeout=60, interval=0.5)
    assert any("task.polled" in deployment.log(w) or "task.submitted" in deployment.log(w)
               for w in workers)  # fmt: skip
    assert max(seen) <= stated, (seen, budgets)
    assert max(seen) < MAX_CONNECTIONS
