"""A bare Engine that implements section 4.1 and nothing more, in its most awkward reading.

Integer ids, odd status words, no result or error fields, an inclusive `since`, whole-second
timestamps in +08:00, lines out of order, exact duplicates, lines arriving late at an instant
that was already read. The monitor must still store every line exactly once.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from aiohttp import web
from psycopg import AsyncConnection

from deduction.application.services import Services
from tests.support.api import free_port
from tests.support.engine import monitor_for
from tests.support.logs import engine_multiset, stored_multiset
from tests.support.plan import create_task
from tests.support.waits import settled

CST = timezone(timedelta(hours=8))
BASE = datetime(2025, 11, 12, 18, 30, tzinfo=CST)
END_TICK = 8


class BareEngine:
    def __init__(self, agents_reported: int | None = None) -> None:
        self.tick = 0
        self.rng = random.Random(7)
        self.lines: dict[int, list[dict[str, Any]]] = {}
        self.agents: list[int] = []
        self.agents_reported = agents_reported

    def _emit(self) -> None:
        """Each status call is a tick; a tick's lines share the instant of tick // 3."""
        self.tick += 1
        ts = (BASE + timedelta(seconds=self.tick // 3)).isoformat()
        for agent in self.agents:
            for i in range(self.rng.randint(0, 4)):
                line = {"timestamp": ts, "level": self.rng.choice(["info", "warn", "Error"]),
                        "message": f"agent {agent} tick {self.tick} #{i % 2}"}  # fmt: skip
                self.lines[agent].append(line)
                if self.rng.random() < 0.3:
                    self.lines[agent].append(dict(line))  # an exact duplicate

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.agents = [501 + i for i in range(len(body["agents"]))]
        self.lines = {a: [] for a in self.agents}
        return web.json_response({"engine_task_id": 1001})

    async def status(self, request: web.Request) -> web.Response:
        if self.tick < END_TICK:
            self._emit()
        done = self.tick >= END_TICK
        agents = [{"engine_agent_id": a, "status": "Success" if done else "RUNNING",
                   "progress": min(99.9, self.tick * 12.5), "vendor": {"x": 1}}
                  for a in self.agents[: self.agents_reported]]  # fmt: skip
        return web.json_response({"status": "FINISHED" if done else "busy", "agents": agents})

    async def logs(self, request: web.Request) -> web.Response:
        lines = self.lines[int(request.match_info["agent_id"])]
        since = request.query.get("since")
        if since is not None:  # inclusive, compared at whole seconds
            cut = datetime.fromisoformat(since).replace(microsecond=0)
            lines = [x for x in lines if datetime.fromisoformat(x["timestamp"]) >= cut]
        shuffled = list(lines)
        self.rng.shuffle(shuffled)
        return web.Response(body=msgspec.json.encode({"logs": shuffled, "more": False}),
                            content_type="application/json")  # fmt: skip


@pytest.fixture
async def bare() -> AsyncIterator[tuple[BareEngine, str]]:
    engine = BareEngine()
    app = web.Application()
    app.router.add_post("/engine/task/submit", engine.submit)
    app.router.add_get("/engine/task/{task_id}/status", engine.status)
    app.router.add_get("/engine/agent/{agent_id}/logs", engine.logs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield engine, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_bare_41_engine_runs_the_task_with_every_line_once(
    services: Services, bare: tuple[BareEngine, str]
) -> None:
    engine, url = bare
    async with monitor_for(services, url) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        for _ in range(END_TICK + 2):
            outcome = await monitor.poll_task(task_id)
        assert outcome is not None and outcome.status == "completed"
    await settled(services)
    task = services.app.get_task(task_id)
    assert task.engine_task_id == "1001"
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        for eid, agent in zip(task.execution_ids, engine.agents):
            execution = services.app.get_execution(eid)
            assert (execution.engine_agent_id, execution.status) == (str(agent), "completed")
            assert await stored_multiset(conn, eid) == engine_multiset(engine.lines[agent])
            cur = await conn.execute(
                "SELECT count(*) FROM agent_execution_log WHERE agent_execution_id = %s"
                " AND level = 'WARNING'", [eid])  # fmt: skip
            assert (await cur.fetchone())[0] > 0  # "warn" is stored as WARNING


async def test_an_engine_reporting_other_agents_than_submitted_is_not_trusted(
    services: Services, bare: tuple[BareEngine, str]
) -> None:
    engine, url = bare
    engine.agents_reported = 1
    async with monitor_for(services, url) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        outcome = await monitor.poll_task(task_id)
    assert outcome is not None and outcome.status == "running"
    task = services.app.get_task(task_id)
    assert task.run_missing_since is not None  # not our run: its reports are not applied
    assert all(services.app.get_execution(e).engine_agent_id is None for e in task.execution_ids)
