"""Under a burst of large poll saves on the embedded database, commands still answer in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.group_save import GroupSave
from deduction.bootstrap import open_services
from deduction.domain import ExecutionLog
from tests.support.api import Api, settings_for
from tests.support.api import serve_api as serve
from tests.support.plan import plan_task

RYW = 10.0  # READ_YOUR_WRITES_TIMEOUT of these tests


def big_batch(execution_id: int, version: int) -> Any:
    lines = [{"timestamp": "2025-11-12T10:00:00Z", "level": "INFO", "message": "m" * 1000,
              "source": "sensor", "extra": {"i": i}} for i in range(100)]  # fmt: skip
    return ExecutionLog.batch(version, execution_id, 1, lines, {"n": version})


@pytest.fixture
async def embedded_api(embedded_db_url: str) -> AsyncIterator[Api]:
    settings = settings_for(embedded_db_url, read_your_writes_timeout=RYW, save_stuck_after=1.0)
    async with open_services(settings) as services, serve(services) as api:
        position = await services.run_sync(load_catalog, services.app, demo_catalog())
        assert await services.runner.wait_for(position, 10)
        yield api


async def test_commands_answer_in_time_while_large_poll_saves_pour_in(embedded_api: Api) -> None:
    """Polls of 100 KB each, 40 at a time for five rounds, share multi-megabyte transactions
    on the embedded server while tasks are created and stopped over HTTP: every command
    answers 200 within READ_YOUR_WRITES_TIMEOUT, and every poll save completes."""
    services = embedded_api.services
    group = GroupSave(services.app.save, weigh=lambda ev: sum(1 + len(e.lines) for e in ev))

    async def poll_burst() -> int:
        saved = 0
        for version in range(1, 6):
            calls = [services.run_poll(group, [big_batch(i, version)]) for i in range(1, 41)]
            saved += len(await asyncio.gather(*calls))
        return saved

    async def command(n: int) -> float:
        started = time.monotonic()
        status, body = await embedded_api.call(
            "POST", "/api/v1/deduction/task/create", json=plan_task(name=f"load_{n}")
        )
        assert status == 200, body
        task_id = body["data"]["task_id"]
        status, body = await embedded_api.call("POST", f"/api/v1/deduction/task/{task_id}/stop")
        assert status == 200, body
        return time.monotonic() - started

    async def commands() -> list[float]:
        slots = asyncio.Semaphore(8)

        async def one(n: int) -> float:
            async with slots:
                return await command(n)

        return await asyncio.gather(*(one(n) for n in range(24)))

    saved, took = await asyncio.wait_for(asyncio.gather(poll_burst(), commands()), 120)
    assert saved == 200
    assert max(took) < 2 * RYW  # create and stop, each within READ_YOUR_WRITES_TIMEOUT
    status, ready = await embedded_api.call("GET", "/ready")
    assert status == 200 and ready["data"]["oldest_save_s"] == 0


async def test_ready_names_a_stuck_write_path_and_recovers(embedded_api: Api) -> None:
    """A save held behind the events table lock for longer than SAVE_STUCK_AFTER makes /ready
    answer 503 saying the write path is stuck; once the lock goes, /ready is 200 again."""
    services = embedded_api.services
    recorder: Any = services.app.recorder
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    with psycopg.connect(services.database_url) as blocker:
        blocker.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        save = asyncio.ensure_future(services.run_poll(services.app.save, big_batch(7, 1)))
        for _ in range(100):
            status, ready = await embedded_api.call("GET", "/ready")
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503 and "write path is stuck" in ready["message"], ready
        blocker.rollback()
    await asyncio.wait_for(save, 30)
    status, ready = await embedded_api.call("GET", "/ready")
    assert status == 200, ready


@pytest.fixture
async def api_ryw_2s(db_url: str) -> AsyncIterator[Api]:
    settings = settings_for(db_url, read_your_writes_timeout=2.0)
    async with open_services(settings) as services, serve(services) as api:
        position = await services.run_sync(load_catalog, services.app, demo_catalog())
        assert await services.runner.wait_for(position, 10)
        yield api


async def test_a_command_does_not_wait_behind_the_log_tables_backlog(
    api_ryw_2s: Api, db_url: str
) -> None:
    """Read-your-writes waits for the read models the command's events go to: with the log
    projection held back (a log page waiting on its lock), a create still answers 200 and its
    task is readable, while the held log lines stay unread until the hold ends."""
    api, services = api_ryw_2s, api_ryw_2s.services
    status, body = await api.call("POST", "/api/v1/deduction/task/create", json=plan_task())
    assert status == 200, body
    first = int(body["data"]["task_id"])
    execution_id = services.app.get_task(first).execution_ids[0]
    lines_url = f"/api/v1/deduction/agent-execution/{execution_id}/logs"

    holder = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    async with holder, holder.transaction():
        await holder.execute("SELECT 1 FROM projection_tracking WHERE name = 'logs' FOR UPDATE")
        lines = [{"timestamp": "2025-11-12T10:00:00Z", "level": "INFO", "message": f"m{i}",
                  "source": None, "extra": None} for i in range(5)]  # fmt: skip
        await services.run_sync(
            services.app.save, ExecutionLog.batch(1, execution_id, first, lines, {})
        )
        status, body = await api.call(
            "POST", "/api/v1/deduction/task/create", json=plan_task(name="second")
        )
        assert status == 200, body  # 503 after 2 s when it waited for the log table
        second = int(body["data"]["task_id"])
        status, _ = await api.call("GET", f"/api/v1/deduction/task/{second}")
        assert status == 200
        status, body = await api.call("GET", lines_url)
        assert (status, body["data"]["total"]) == (200, 0), body  # still held back

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = await api.call("GET", lines_url)
        if body["data"]["total"] == 5:
            break
        await asyncio.sleep(0.1)
    assert body["data"]["total"] == 5, body
