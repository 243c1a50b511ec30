"""A reference Engine on a loopback port, and a TaskMonitor that talks to it over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from psycopg import AsyncConnection

from deduction.adapters.engine import HttpEngine, engine_session
from deduction.adapters.event_store import event_streams_for
from deduction.application.monitor import TaskMonitor
from deduction.application.reports import EngineReports
from deduction.application.services import Services
from deduction.reference_engine.server import ReferenceEngine, serve_reference_engine
from deduction.reference_engine.simulation import Knobs
from tests.support.api import Api, free_port
from tests.support.logs import engine_multiset, stored_multiset

FAST = {
    "duration_min": 0.3,
    "duration_max": 0.8,
    "log_rate": 60.0,
    "start_delay": 0.1,
    "fail_rate": 0.0,
}


class EngineClock:
    """The Engine's time, moved by the test (`Simulation.clock`)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


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
            out[agent.id] = [sim.render_emitted(line) for line in agent.lines]
        return out


@contextlib.asynccontextmanager
async def live_engine(**knobs: Any) -> AsyncIterator[LiveEngine]:
    live = LiveEngine(ReferenceEngine(Knobs(**{**FAST, **knobs})), free_port())
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


async def logs_match(api: Api, live: LiveEngine, task: dict[str, Any]) -> bool:
    """Every agent's stored lines are exactly the lines the Engine emitted."""
    emitted = live.emitted(task["engine_task_id"])
    async with await AsyncConnection.connect(api.services.database_url, autocommit=True) as conn:
        for agent in task["agent_executions"]:
            if await stored_multiset(conn, agent["id"]) != engine_multiset(
                emitted[agent["engine_agent_id"]]
            ):
                return False
    return True


@contextlib.asynccontextmanager
async def monitor_for(
    services: Services, url: str, *, timeout: float = 2.0, deadline: float = 300.0, **kw: Any
) -> AsyncIterator[TaskMonitor]:
    """A TaskMonitor over the real HttpEngine and the test's application."""
    async with engine_session() as session:
        engine = HttpEngine(session, url, timeout, **kw)
        reports = EngineReports(
            services.app,
            url,
            deadline,
            services.settings.log_batch_size,
            streams=event_streams_for(services.app),
        )
        yield TaskMonitor(reports, engine, services.run_sync, restart_backoff=0.05)


async def drain(monitor: TaskMonitor, task_id: int, polls: int = 200) -> None:
    """Poll an ended task until every agent's logs are marked drained."""
    for _ in range(polls):
        _, _, cursors = await monitor._run(monitor.reports.load, task_id)
        if all(c.drained for _, c in cursors.values()):
            return
        await monitor.poll_task(task_id)
    raise AssertionError(f"the logs of task {task_id} were not drained within {polls} polls")


async def run_to_end(monitor: TaskMonitor, task_id: int, polls: int = 400) -> str:
    """Poll until the task has ended (bounded by a number of polls, not by time)."""
    for _ in range(polls):
        outcome = await monitor.poll_task(task_id)
        if outcome is not None and outcome.status in ("completed", "failed", "stopped"):
            await monitor.poll_task(task_id)  # an ended task only drains logs: a no-op here
            return outcome.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end within {polls} polls")
