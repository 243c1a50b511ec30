"""The API over real HTTP: settings for a test database, a loopback server and its client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import uvicorn

from deduction.application.services import Services
from deduction.config import Settings
from tests.support.plan import PLAN_TASK, plan_task

TASK = "/api/v1/deduction/task"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(db_url: str, **overrides: Any) -> Settings:
    """Settings for a test: its database, no Engine, no polling, a generous read-your-writes."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "engine_url": "http://127.0.0.1:9",
        "task_poll_enabled": False,
        "read_your_writes_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


class Api:
    """A client of the API served by a real uvicorn server on a loopback port."""

    def __init__(self, base: str, session: aiohttp.ClientSession, services: Services) -> None:
        self.base, self.session, self.services = base, session, services

    async def call(
        self, method: str, path: str, json: Any = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(method, self.base + path, json=json, **kwargs) as r:
            body = await r.read()
            return r.status, msgspec.json.decode(body) if body else {}


@contextlib.asynccontextmanager
async def serve_api(services: Services) -> AsyncIterator[Api]:
    """The app over `services`, served by uvicorn until the block ends."""
    from deduction.adapters.http.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(services),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,  # a request left running must not hold the test's teardown
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{port}", session, services)
    server.should_exit = True
    await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def working_services(
    db_url: str, engine_url: str, **overrides: Any
) -> AsyncIterator[Services]:
    """Services with the demo catalog and the in-process worker sweeping every 0.1 s."""
    from deduction.application.catalog_import import demo_catalog, load_catalog
    from deduction.bootstrap import open_dispatch, open_services

    settings = settings_for(db_url, engine_url=engine_url, task_poll_enabled=True,
                            task_poll_interval=0.1, **overrides)  # fmt: skip
    async with open_services(settings) as s, open_dispatch(s):
        assert await s.runner.wait_for(await s.run_sync(load_catalog, s.app, demo_catalog()), 10)
        yield s


async def create_task(api: Api, **changes: Any) -> dict[str, Any]:
    """Create the plan's task over HTTP (fields changed); its detail as the API shows it."""
    status, body = await api.call("POST", f"{TASK}/create", json=plan_task(**changes))
    assert status == 200, body
    return await task_detail(api, int(body["data"]["task_id"]))


async def create_task_id(api: Api, name: str = PLAN_TASK["name"]) -> int:
    """Create the plan's task under `name` over HTTP; its id."""
    status, body = await api.call("POST", f"{TASK}/create", json=plan_task(name=name))
    assert status == 200, body
    return int(body["data"]["task_id"])


async def task_detail(api: Api, task_id: int) -> dict[str, Any]:
    status, body = await api.call("GET", f"{TASK}/{task_id}")
    assert status == 200, body
    return dict(body["data"])


async def event_head(api: Api) -> int:
    """The newest notification id in the event store: unchanged means no state changed."""
    return int(await api.services.run_sync(api.services.app.recorder.max_notification_id) or 0)


async def drive_task(api: Api, task_id: int, *statuses: str) -> None:
    """Move a task through statuses as the Engine worker would record them."""

    def change() -> int:
        app = api.services.app
        task = app.get_task(task_id)
        for status in statuses:
            reason = "the Engine reported a failure" if status == "failed" else None
            task.change_status(status, reason, "engine")
        return max(r.notification.id for r in app.save(task))

    position = await api.services.run_sync(change)
    assert await api.services.runner.wait_for(position, 10)
