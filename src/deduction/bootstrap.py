"""Composition root: builds the application, read pool, projection runner and dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from deduction.adapters.audit_chain import ChainWriter
from deduction.adapters.postgres import (
    PROJECTIONS,
    READS,
    eventsourcing_env,
    start_embedded,
    with_timeouts,
)
from deduction.application.ports import Dispatcher, NoDispatcher
from deduction.application.service import DeductionApp
from deduction.application.services import Services
from deduction.config import Settings, data_path
from deduction.projections.runner import ProjectionRunner

log = structlog.get_logger(__name__)


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when given; otherwise the embedded server in the data directory."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(data_path(settings))


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, *, run_projections: bool = True
) -> AsyncIterator[Services]:
    """Start everything a process needs; stop it in reverse order.

    Two thread pools (docs/pools-and-timeouts.md): COMMAND_THREADS for API commands and
    POLL_THREADS for the worker, so a command never queues behind poll saves; the event
    store's connection pool has a connection for each of their threads.
    """
    url = await asyncio.to_thread(resolve_database_url, settings)
    threads = settings.command_threads + settings.poll_threads
    env = eventsourcing_env(url, pool_size=threads, statement_timeout=settings.db_statement_timeout)
    app = await asyncio.to_thread(DeductionApp, env=env)
    runner = ProjectionRunner(with_timeouts(url, PROJECTIONS))
    await runner.setup()
    chain = ChainWriter(with_timeouts(url, PROJECTIONS))  # the audit chain (D11)
    await chain.setup()
    pool = AsyncConnectionPool(with_timeouts(url, READS), min_size=1, max_size=10, open=False,
                               kwargs={"autocommit": True})  # fmt: skip
    await pool.open(wait=True, timeout=30)
    executor = ThreadPoolExecutor(settings.command_threads, thread_name_prefix="command")
    polls = ThreadPoolExecutor(settings.poll_threads, thread_name_prefix="poll")
    stop = asyncio.Event()
    runner_task = asyncio.create_task(runner.run(stop)) if run_projections else None
    chain_task = asyncio.create_task(chain.run(stop)) if run_projections else None
    services = Services(settings, url, app, runner, pool, executor, polls)
    try:
        yield services
    finally:
        stop.set()
        for task in (runner_task, chain_task):
            if task:
                await task
        await pool.close()
        executor.shutdown(wait=True)
        polls.shutdown(wait=True)
        app.close()


# -- the worker and the Engine ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_worker_context(
    services: Services, enqueue: Callable[..., Any]
) -> AsyncIterator[dict[str, Any]]:
    """What the jobs find in ctx: the monitor (HttpEngine behind it), the read pool, settings."""
    import aiohttp

    from deduction.adapters.engine import CircuitBreaker, HttpEngine
    from deduction.adapters.event_store import event_streams_for
    from deduction.adapters.worker.admission import Admission, caps_of
    from deduction.application.monitor import TaskMonitor
    from deduction.application.reports import EngineReports

    s = services.settings
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        # While the circuit is open, one probe per poll interval finds out that it is back.
        breaker = CircuitBreaker(threshold=5, cooldown=min(30.0, s.task_poll_interval))
        engine = HttpEngine(session, s.engine_url, s.engine_timeout, breaker=breaker)
        reports = EngineReports(
            services.app,
            s.engine_url,
            s.engine_unreachable_deadline,
            s.log_batch_size,
            streams=event_streams_for(services.app),
            run_missing_grace=s.engine_run_missing_grace,
        )
        monitor = TaskMonitor(reports, engine, services.run_poll)
        caps = caps_of(s)
        admission = Admission(services, reports, caps) if caps.any else None
        yield {"monitor": monitor, "engine": engine, "pool": services.pool, "settings": s,
               "enqueue": enqueue, "admission": admission}  # fmt: skip


@contextlib.asynccontextmanager
async def open_dispatch(services: Services) -> AsyncIterator[Dispatcher]:
    """REDIS_URL set: enqueue to arq (workers run elsewhere). Unset: run the worker here."""
    from deduction.adapters.worker import InProcessWorker, JobDispatcher, arq_enqueuer

    s = services.settings
    if s.redis_url:
        from arq.connections import RedisSettings, create_pool

        redis = await create_pool(RedisSettings.from_dsn(s.redis_url))
        services.dispatcher = JobDispatcher(arq_enqueuer(redis, s.worker_queue))
        try:
            yield services.dispatcher
        finally:
            services.dispatcher = NoDispatcher()
            await redis.aclose()
        return
    worker = InProcessWorker(s)
    async with open_worker_context(services, worker.enqueue) as ctx, worker.running(ctx):
        services.dispatcher = JobDispatcher(worker.enqueue)
        try:
            yield services.dispatcher
        finally:
            services.dispatcher = NoDispatcher()


@contextlib.asynccontextmanager
async def open_arq_worker(
    settings: Settings, enqueue: Callable[..., Any]
) -> AsyncIterator[dict[str, Any]]:
    """What an arq worker process opens at start-up: the services and the jobs' ctx."""
    async with open_services(settings) as services, open_worker_context(services, enqueue) as ctx:
        yield ctx


def arq_worker_settings(settings: Settings) -> dict[str, Any]:
    from deduction.adapters.worker.arq_worker import worker_settings

    return worker_settings(settings, open_arq_worker)


def __getattr__(name: str) -> Any:
    """`arq deduction.bootstrap.WorkerSettings` reads the environment when it asks for it."""
    if name == "WorkerSettings":
        from deduction.config import load_settings

        return type("WorkerSettings", (), arq_worker_settings(load_settings()))
    raise AttributeError(name)
