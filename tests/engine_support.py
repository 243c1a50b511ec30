"""Engine test helpers: a reference Engine on a loopback port, bounded waits, log multisets."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import msgspec
from psycopg import AsyncConnection

from deduction.adapters.engine import HttpEngine
from deduction.adapters.event_store import event_streams_for
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.log_cursor import normalise
from deduction.application.monitor import TaskMonitor
from deduction.application.ports import EngineLogLine
from deduction.application.reports import EngineReports
from deduction.application.service import AgentConfig, DeductionApp, NewTask
from deduction.application.services import Services
from deduction.reference_engine.server import ReferenceEngine, serve_reference_engine
from deduction.reference_engine.simulation import Knobs
from tests.conftest import free_port

T = TypeVar("T")
FAST = {"duration_min": 0.3, "duration_max": 0.8, "log_rate": 60.0, "start_delay": 0.1,
        "fail_rate": 0.0}  # fmt: skip
_enc = msgspec.json.Encoder(order="sorted")


class LiveEngine:
    """A reference Engine served on a loopback port; stop() and start() keep its state."""

    def __init__(self, engine: ReferenceEngine, port: int) -> None:
        self.engine, self.port = engine, port
        self.url = f"http://127.0.0.1:{port}"
        self._serving: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        self._serving = contextlib.AsyncExitStack()
        await self._serving.enter_async_context(
            serve_reference_engine(self.engine, "127.0.0.1", self.port)
        )

    async def stop(self) -> None:
        if self._serving is not None:
            await self._serving.aclose()
            self._serving = None

    def emitted(self, engine_task_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every line each agent of the run emitted so far, by engine agent id."""
        sim = self.engine.sim
        task = sim.tasks[engine_task_id]
        now = sim.clock()
        out = {}
        for agent in task.agents:
            agent.advance(now)
            out[agent.id] = [sim.render(line) for line in agent.lines]
        return out


@contextlib.asynccontextmanager
async def live_engine(**knobs: Any) -> AsyncIterator[LiveEngine]:
    live = LiveEngine(ReferenceEngine(Knobs(**{**FAST, **knobs})), free_port())
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


async def wait_until(
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


def line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """A comparable form of a stored line (timestamp as an instant, extra as canonical JSON)."""
    ts = line["timestamp"]
    ts = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)
    extra = line.get("extra")
    return (ts, line["level"], line["message"], line.get("source"),
            None if extra is None else _enc.encode(extra))  # fmt: skip


def engine_multiset(lines: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    normalised = [normalise(msgspec.convert(x, EngineLogLine)) for x in lines]
    return Counter(line_key(x) for x in normalised if x is not None)


async def settled(services: Services) -> None:
    """Wait until the read tables include every event saved so far."""
    services.runner.kick()
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT coalesce(max(notification_id), 0) FROM deduction_events")
        row = await cur.fetchone()
    assert row is not None and await services.runner.wait_for(row[0], 10)


async def stored_multiset(
    conn: AsyncConnection[Any], execution_id: int
) -> Counter[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT timestamp, level, message, source, extra_data FROM agent_execution_log"
        " WHERE agent_execution_id = %s",
        [execution_id],
    )
    return Counter(
        line_key({"timestamp": r[0], "level": r[1], "message": r[2], "source": r[3], "extra": r[4]})
        for r in await cur.fetchall()
    )


def plan_task(name: str = "task_20251112_001", params: list[dict[str, Any]] | None = None,
              max_retry: int = 3) -> NewTask:  # fmt: skip
    """The plan's example task (demo catalog: agents 10001/10002, scheme, env)."""
    params = params or [{"attack_strategy": "aggressive", "target": "192.168.1.100"},
                        {"defense_level": "high"}]  # fmt: skip
    metas, sides = [10001, 10002], ["red", "blue"]
    return NewTask(
        name=name, description="红蓝对抗演练任务", scheme_id=1234567890,
        env_instance_id=9876543210,
        agent_configs=[AgentConfig(metas[i % 2], sides[i % 2], p, max_retry)
                       for i, p in enumerate(params)],
    )  # fmt: skip


def create_task(app: DeductionApp, new: NewTask | None = None) -> int:
    load_catalog(app, demo_catalog())
    return int(app.create_task(new or plan_task(), "tester").data["task_id"])


@contextlib.asynccontextmanager
async def monitor_for(
    services: Services, url: str, *, timeout: float = 2.0, deadline: float = 300.0, **kw: Any
) -> AsyncIterator[TaskMonitor]:
    """A TaskMonitor over the real HttpEngine and the test's application."""
    async with aiohttp.ClientSession() as session:
        engine = HttpEngine(session, url, timeout, **kw)
        reports = EngineReports(
            services.app,
            url,
            deadline,
            services.settings.log_batch_size,
            streams=event_streams_for(services.app),
        )
        yield TaskMonitor(reports, engine, services.run_sync, restart_backoff=0.05)


async def run_to_end(monitor: TaskMonitor, task_id: int, polls: int = 400) -> str:
    """Poll until the task has ended (bounded by a number of polls, not by time)."""
    for _ in range(polls):
        outcome = await monitor.poll_task(task_id)
        if outcome is not None and outcome.status in ("completed", "failed", "stopped"):
            await monitor.poll_task(task_id)  # an ended task only drains logs: a no-op here
            return outcome.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end within {polls} polls")
