"""The real app on uvicorn in a thread of its own, over a fresh database with seeded rows."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import uvicorn

from deduction.adapters.http.app import create_app
from deduction.adapters.postgres import create_database, drop_database, with_database
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.service import AgentConfig, NewTask
from deduction.application.services import Services
from deduction.application.tokens import issue_token
from deduction.bootstrap import open_services
from deduction.domain import ExecutionLog
from tests.support.api import free_port, settings_for
from tests.support.logs import log_lines


class LiveServer:
    """The real app on uvicorn, in a thread with its own event loop."""

    def __init__(self, database_url: str, **overrides: Any) -> None:
        self.database_url, self.overrides = database_url, overrides
        self.token = ""
        """An admin token when authentication is on (AUTH_MODE=on in `overrides`)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ids: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60) or self._error:
            raise RuntimeError(f"the API did not start: {self._error!r}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        settings = settings_for(self.database_url, stream_max_age=0.1, **self.overrides)
        async with open_services(settings) as services:
            await self._seed(services)
            config = uvicorn.Config(
                create_app(services), host="127.0.0.1", port=self.port, log_level="warning"
            )
            self._server = uvicorn.Server(config)
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving

    async def _seed(self, services: Services) -> None:
        app = services.app
        await services.run_sync(load_catalog, app, demo_catalog())
        agents = [
            AgentConfig(10001, "red", {"attack_strategy": "aggressive"}),
            AgentConfig(10002, "blue", {}),
        ]
        running = await services.command(
            app.create_task, NewTask("seeded", "with logs", 1234567890, 9876543210, agents), "seed"
        )
        stopped = await services.command(
            app.create_task, NewTask("seeded-stopped", None, 1234567890, 9876543210, agents), "seed"
        )
        task_id = running.data["task_id"]
        execution_id = app.get_task(task_id).execution_ids[0]
        batch = ExecutionLog.batch(1, execution_id, task_id, log_lines(30), {})
        recordings = await services.run_sync(app.save, batch)
        await services.runner.wait_for(recordings[-1].notification.id, 10)
        await services.command(app.request_stop, stopped.data["task_id"], "seed")
        issued = await services.run_sync(issue_token, app, "seed-admin", ["admin"], None, "seed")
        await services.runner.wait_for(issued.position, 10)
        self.token = issued.token
        self.ids = {
            "task": task_id,
            "stopped_task": stopped.data["task_id"],
            "execution": execution_id,
        }


@contextlib.contextmanager
def seeded_live_server(server_url: str, **overrides: Any) -> Iterator[LiveServer]:
    """The plan's catalog, a task with 30 log lines and a stopped task, served over HTTP
    (for clients that call synchronously), and an admin token in `token`; the database is
    dropped afterwards."""
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(server_url, name)
    server = LiveServer(with_database(server_url, name), **overrides)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_database(server_url, name)
