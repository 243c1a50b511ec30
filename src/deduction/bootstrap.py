"""Composition root: builds the application, read pool, projection runner and dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from deduction.adapters.postgres import eventsourcing_env, start_embedded
from deduction.application import DeductionApp, Receipt
from deduction.config import Settings, data_path
from deduction.ports import Dispatcher, NoDispatcher
from deduction.projections.runner import ProjectionRunner

log = structlog.get_logger(__name__)


class ReadModelLagError(Exception):
    """The command was saved, but the read tables did not include it in time (503)."""


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when given; otherwise the embedded server in the data directory."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(data_path(settings))


@dataclass
class Services:
    settings: Settings
    database_url: str
    app: DeductionApp
    runner: ProjectionRunner
    pool: AsyncConnectionPool
    executor: ThreadPoolExecutor
    dispatcher: Dispatcher = field(default_factory=NoDispatcher)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous application call in the bounded command thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def command(self, fn: Callable[..., Receipt], *args: Any) -> Receipt:
        """Run a command, then wait until the read tables include its events."""
        receipt: Receipt = await self.run_sync(fn, *args)
        self.runner.kick()
        if not await self.runner.wait_for(
            receipt.position, self.settings.read_your_writes_timeout
        ):
            raise ReadModelLagError(
                f"saved, but the read tables did not reach position {receipt.position}"
                f" within {self.settings.read_your_writes_timeout}s"
            )
        return receipt


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, run_projections: bool = True, command_threads: int = 8
) -> AsyncIterator[Services]:
    """Start everything a process needs; stop it in reverse order."""
    url = await asyncio.to_thread(resolve_database_url, settings)
    app = await asyncio.to_thread(
        DeductionApp, env=eventsourcing_env(url, pool_size=command_threads)
    )
    runner = ProjectionRunner(url)
    await runner.setup()
    pool = AsyncConnectionPool(url, min_size=1, max_size=10, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    executor = ThreadPoolExecutor(max_workers=command_threads, thread_name_prefix="command")
    stop = asyncio.Event()
    runner_task = asyncio.create_task(runner.run(stop)) if run_projections else None
    services = Services(settings, url, app, runner, pool, executor)
    try:
        yield services
    finally:
        stop.set()
        if runner_task:
            await runner_task
        await pool.close()
        executor.shutdown(wait=True)
        app.close()
