"""Composition root: builds the application, read pool, projection runner and dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from eventsourcing.persistence import IntegrityError

from deduction.adapters.audit_chain import ChainWriter
from deduction.adapters.event_store import event_streams_for
from deduction.adapters.postgres import (
    PROJECTIONS,
    READS,
    eventsourcing_env,
    read_pool,
    start_embedded,
    with_timeouts,
)
from deduction.application.ports import Dispatcher, NoDispatcher
from deduction.application.service import DeductionApp
from deduction.application.services import Services
from deduction.config import Settings, data_path
from deduction.projections.runner import ProjectionRunner, all_projections

log = structlog.get_logger(__name__)


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when given; otherwise the embedded server in the data directory."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(data_path(settings))


def open_app(env: dict[str, str], attempts: int = 3) -> DeductionApp:
    """The application, creating the event store's tables if need be. Processes starting
    together on a fresh database race to create them (CREATE TABLE IF NOT EXISTS is not safe
    against a concurrent one): the loser finds them made when it tries again."""
    for attempt in range(1, attempts + 1):
        try:
            app = DeductionApp(env=env)
            app.bulk = event_streams_for(app)
            return app
        except IntegrityError:
            if attempt == attempts:
                raise
            log.info("postgres.tables_created_meanwhile", attempt=attempt)
    raise AssertionError("unreachable")


Role = Literal["api", "worker"]
READ_POOL = {"api": 10, "worker": 2}  # most connections of the async read pool, by role


@dataclass(frozen=True)
class ConnectionBudget:
    """The most PostgreSQL connections one process holds, by use (docs/pools-and-timeouts.md);
    start-up opens one more for a moment, to create the tables."""

    event_store: int  # one per command or poll thread: the library's pool, no overflow
    reads: int  # the async read pool (API reads; the worker's sweep and log retention)
    projections: int  # a connection per projection and a LISTEN (the API and the projector)
    audit_chain: int  # the chain writer's connection (the API and the projector)
    streams: int  # the stream hub's LISTEN (the API)

    @property
    def total(self) -> int:
        return self.event_store + self.reads + self.projections + self.audit_chain + self.streams

    def fields(self) -> dict[str, int]:
        return {**{f: getattr(self, f) for f in self.__dataclass_fields__}, "total": self.total}


def connection_budget(settings: Settings, role: str) -> ConnectionBudget:
    """What a process of this role opens: `api` (`deduction serve`, with the worker in it
    when no REDIS_URL is set), `worker` (`deduction worker`) or `projector`."""
    projections = len(all_projections()) + 1
    if role == "projector":
        return ConnectionBudget(0, 0, projections, 1, 0)
    if role == "worker":
        return ConnectionBudget(settings.poll_threads, READ_POOL["worker"], 0, 0, 0)
    threads = settings.command_threads + (0 if settings.redis_url else settings.poll_threads)
    return ConnectionBudget(threads, READ_POOL["api"], projections, 1, 1)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, role: Role = "api") -> AsyncIterator[Services]:
    """Start everything a process needs; stop it in reverse order.

    Two thread pools (docs/pools-and-timeouts.md): COMMAND_THREADS for API commands and
    POLL_THREADS for the worker, so a command never queues behind poll saves; the event
    store's connection pool has a connection for each thread that may use it. The API
    runs the projections; a worker runs none (its reads wait on no read table), so adding
    workers adds only their event store and read connections.
    """
    url = await asyncio.to_thread(resolve_database_url, settings)
    budget = connection_budget(settings, role)
    log.info("postgres.connection_budget", role=role, **budget.fields())
    env = eventsourcing_env(url, pool_size=budget.event_store, max_overflow=0,
                            statement_timeout=settings.db_statement_timeout)  # fmt: skip
    app = await asyncio.to_thread(open_app, env)
    runner = ProjectionRunner(with_timeouts(url, PROJECTIONS))
    await runner.setup()  # the read tables exist before anything reads them
    chain = ChainWriter(with_timeouts(url, PROJECTIONS))  # the audit chain (D11)
    if budget.audit_chain:
        await chain.setup()
    pool = read_pool(with_timeouts(url, READS), budget.reads)
    await pool.open(wait=True, timeout=30)
    runner.reads = pool
    executor = ThreadPoolExecutor(settings.command_threads, thread_name_prefix="command")
    polls = ThreadPoolExecutor(settings.poll_threads, thread_name_prefix="poll")
    stop = asyncio.Event()
    runner_task = asyncio.create_task(runner.run(stop)) if budget.projections else None
    chain_task = asyncio.create_task(chain.run(stop)) if budget.audit_chain else None
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


async def run_projector(settings: Settings, stop: asyncio.Event) -> None:
    """`deduction projector`: the projections and the audit chain alone, until `stop`."""
    url = await asyncio.to_thread(resolve_database_url, settings)
    log.info("postgres.connection_budget", role="projector",
             **connection_budget(settings, "projector").fields())  # fmt: skip
    # The event store's table first (the projections read it), over one short connection.
    await asyncio.to_thread(lambda: open_app(eventsourcing_env(url, 1, 0)).close())
    runner = ProjectionRunner(with_timeouts(url, PROJECTIONS))
    await runner.setup()
    chain = ChainWriter(with_timeouts(url, PROJECTIONS))
    await chain.setup()
    log.info("projector.started", projections=[p.name for p in runner.projections])
    await asyncio.gather(runner.run(stop), chain.run(stop))


# -- the worker and the Engine ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_worker_context(
    services: Services, enqueue: Callable[..., Any]
) -> AsyncIterator[dict[str, Any]]:
    """What the jobs find in ctx: the monitor (HttpEngine behind it), the read pool, settings."""
    from deduction.adapters.engine import CircuitBreaker, HttpEngine, engine_session
    from deduction.adapters.metrics import METRICS
    from deduction.adapters.worker.admission import Admission, LoadSampler, caps_of
    from deduction.application.monitor import TaskMonitor
    from deduction.application.reports import EngineReports

    s = services.settings
    async with engine_session(limit=100) as session:
        # While the circuit is open, one probe per poll interval finds out that it is back.
        breaker = CircuitBreaker(threshold=5, cooldown=min(30.0, s.task_poll_interval))
        metrics = METRICS if s.metrics_enabled else None
        engine = HttpEngine(session, s.engine_url, s.engine_timeout, breaker=breaker,
                            observe=metrics.observe_engine_call if metrics else None)  # fmt: skip
        services.engine = engine
        if metrics is not None:
            metrics.circuit_open.set_function(lambda: float(engine.circuit_open()))
        reports = EngineReports(
            services.app,
            s.engine_url,
            s.engine_unreachable_deadline,
            s.log_batch_size,
            streams=services.app.bulk,
            run_missing_grace=s.engine_run_missing_grace,
        )
        monitor = TaskMonitor(reports, engine, services.run_poll)
        caps, sampler = caps_of(s), LoadSampler(services, engine)
        admission = Admission(services, reports, caps, sampler) if caps.any else None
        yield {"monitor": monitor, "engine": engine, "pool": services.pool, "settings": s,
               "enqueue": enqueue, "admission": admission, "load_sampler": sampler,
               "metrics": metrics}  # fmt: skip


@contextlib.asynccontextmanager
async def open_dispatch(services: Services) -> AsyncIterator[Dispatcher]:
    """REDIS_URL set: enqueue to arq (workers run elsewhere). Unset: run the worker here."""
    from deduction.adapters.worker import InProcessWorker, JobDispatcher, arq_enqueuer

    s = services.settings
    if s.redis_url:
        from arq.connections import ArqRedis
        from redis.asyncio import ConnectionPool

        # Connected on first use, not at start: the API serves (and saves commands, which the
        # sweep picks up) while Redis is down; a failed enqueue is logged (dispatch.failed).
        redis = ArqRedis(ConnectionPool.from_url(s.redis_url, socket_connect_timeout=2,
                                                 socket_timeout=5))  # fmt: skip
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
    async with open_services(settings, role="worker") as services, \
            open_worker_context(services, enqueue) as ctx:  # fmt: skip
        yield ctx


@contextlib.contextmanager
def serve_worker_metrics(settings: Settings) -> Iterator[None]:
    """A worker's /metrics on METRICS_HOST:METRICS_PORT (0: none), served from a thread of
    its own so a busy event loop still answers scrapes (decision D23)."""
    if not (settings.metrics_port and settings.metrics_enabled):
        yield
        return
    from prometheus_client import start_http_server

    from deduction.adapters.metrics import METRICS

    server, thread = start_http_server(settings.metrics_port, settings.metrics_host,
                                       registry=METRICS.registry)  # fmt: skip
    log.info("worker.metrics_served", host=settings.metrics_host, port=settings.metrics_port)
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)


def arq_worker_settings(settings: Settings) -> dict[str, Any]:
    from deduction.adapters.worker.arq_worker import worker_settings

    return worker_settings(settings, open_arq_worker)


def __getattr__(name: str) -> Any:
    """`arq deduction.bootstrap.WorkerSettings` reads the environment when it asks for it."""
    if name == "WorkerSettings":
        from deduction.config import load_settings

        return type("WorkerSettings", (), arq_worker_settings(load_settings()))
    raise AttributeError(name)
