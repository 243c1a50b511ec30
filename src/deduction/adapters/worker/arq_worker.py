"""arq settings: `deduction worker` (or `arq deduction.bootstrap.WorkerSettings`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis.exceptions
import structlog
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Worker, func

from deduction.adapters.worker.dispatch import Enqueue, arq_enqueuer
from deduction.adapters.worker.jobs import (
    TASK_JOBS,
    job_timeout,
    poll_tasks,
    purge_logs,
    sweep,
)
from deduction.config import Settings

log = structlog.get_logger(__name__)


def worker_loop() -> asyncio.AbstractEventLoop:
    """The event loop of an arq worker process, made the thread's current loop before the
    Worker is made (arq runs on the loop current then, else on a new asyncio loop): uvloop
    where it is installed, as `deduction serve` runs on. Same semantics; its transports,
    timers and callbacks are C, which a poll's Engine calls and Redis round trips exercise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - installed on every supported platform
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def cron_seconds(interval: float) -> set[int]:
    """arq's cron works in whole seconds of the minute: the sweep's ticks within one minute."""
    step = max(1, min(60, round(interval)))
    return set(range(0, 60, step))


# Redis unreachable, gone mid-command (a connection lost during WATCH is a WatchError), or
# answering errors (out of memory, loading): what a restart, a blip or a full Redis raises.
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0


class Backoff:
    """Waits that double from BACKOFF_FIRST up to BACKOFF_MAX, with jitter; an outage is
    logged when it starts and when it ends (with how long it lasted)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = BACKOFF_FIRST
        self.down_since: float | None = None
        self.attempts = 0

    async def failed(self, error: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(f"worker.{self.what}_unavailable", error=repr(error))
        self.attempts += 1
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(BACKOFF_MAX, self.delay * 2)

    def succeeded(self) -> bool:
        """True when this ends an outage."""
        if self.down_since is None:
            return False
        log.info(f"worker.{self.what}_back", down_s=round(time.monotonic() - self.down_since, 2),
                 attempts=self.attempts)  # fmt: skip
        self.down_since, self.delay, self.attempts = None, BACKOFF_FIRST, 0
        return True


class ResilientWorker(Worker):
    """arq's Worker, except that losing Redis is waited out instead of ending the process.

    arq lets a ConnectionError out of its poll loop (and out of a job whose result it could not
    record), which ends `deduction worker`. Here the loop backs off and carries on once Redis
    answers again; jobs caught mid-way are run again later (every job is idempotent: a poll
    starts from the cursors in the event store, and the sweep re-derives all pending work from
    the read tables, so a Redis restarted empty loses nothing).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis = Backoff("redis")

    async def main(self) -> None:
        while True:  # Redis down at start-up: wait for it (arq gives up after five tries)
            try:
                await super().main()
                return
            except REDIS_DOWN as e:
                if self._pool is not None:
                    with contextlib.suppress(*REDIS_DOWN):
                        await self._pool.close(close_connection_pool=True)
                    self._pool = None
                await self._redis.failed(e)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as e:
            await self._redis.failed(e)
        else:
            if self._redis.succeeded():
                self._last_health_check = 0  # a restarted Redis lost the health-check key

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, one job at a time, giving back the job's slot when Redis fails
        before the job started (arq's own keeps it, and 32 outages would stop the worker)."""
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except REDIS_DOWN:
                # Raised only between taking the slot and creating the job's task.
                self.job_counter -= 1
                self.sem.release()
                raise

    async def close(self) -> None:
        with contextlib.suppress(*REDIS_DOWN):
            await super().close()


class PollClaims:
    """A key per task polled (`<queue>:polling:<task id>`, SET NX), taken and given back for
    a whole batch in one round trip each. It expires after `ttl` seconds (a poll job's
    timeout), so a worker killed mid-poll holds its tasks no longer than arq holds the job."""

    def __init__(self, ctx: dict[str, Any], queue: str, ttl: float) -> None:
        # ctx["redis"] is read at each call: arq makes a new pool when Redis comes back
        self._ctx, self._prefix, self._ttl_ms = ctx, f"{queue}:polling:", int(ttl * 1000)

    async def take(self, task_ids: Sequence[int]) -> list[int]:
        async with self._ctx["redis"].pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.set(f"{self._prefix}{task_id}", b"1", nx=True, px=self._ttl_ms)
            taken = await pipe.execute()
        return [task_id for task_id, ok in zip(task_ids, taken) if ok]

    async def give_back(self, task_ids: Sequence[int]) -> None:
        if task_ids:
            keys = [f"{self._prefix}{task_id}" for task_id in task_ids]
            await self._ctx["redis"].delete(*keys)


OpenContext = Callable[[Settings, Enqueue], AbstractAsyncContextManager[dict[str, Any]]]


def _lifecycle(open_context: OpenContext) -> tuple[Any, Any]:
    """arq's on_startup/on_shutdown: open what the jobs need (given by the composition root)."""

    async def startup(ctx: dict[str, Any]) -> None:
        settings: Settings = ctx["settings"]
        if "stack" in ctx:  # arq started again after Redis went away during start-up
            return
        enqueue = arq_enqueuer(ctx["redis"], settings.worker_queue)
        database = Backoff("database")
        while True:  # PostgreSQL not there yet (or restarting): wait for it, do not exit
            stack = contextlib.AsyncExitStack()
            try:
                ctx.update(await stack.enter_async_context(open_context(settings, enqueue)))
            except Exception as e:  # noqa: BLE001 - logged; a bad setting shows in every line
                await stack.aclose()
                await database.failed(e)
            else:
                database.succeeded()
                break
        ctx["stack"] = stack
        ctx["claims"] = PollClaims(ctx, settings.worker_queue,
                                   job_timeout(settings.engine_timeout))  # fmt: skip
        log.info("worker.started", mode="arq", queue=settings.worker_queue,
                 sweep=settings.task_poll_enabled)  # fmt: skip

    async def shutdown(ctx: dict[str, Any]) -> None:
        stack = ctx.get("stack")
        if stack is not None:
            await stack.aclose()

    return startup, shutdown


def worker_settings(settings: Settings, open_context: OpenContext) -> dict[str, Any]:
    """Keyword arguments of arq's Worker for these settings."""
    if not settings.redis_url:
        raise LookupError("REDIS_URL is not set: `deduction serve` runs the jobs in-process")
    startup, shutdown = _lifecycle(open_context)
    queue, timeout = settings.worker_queue, job_timeout(settings.engine_timeout)
    crons = [cron(purge_logs, name=f"{queue}:purge_logs", minute={7}, second={0},
                  run_at_startup=True, timeout=timeout)]  # fmt: skip
    if settings.task_poll_enabled:
        ticks = cron_seconds(settings.task_poll_interval)
        crons.append(cron(sweep, name=f"{queue}:sweep", second=ticks, run_at_startup=True,
                          timeout=timeout))  # fmt: skip
    return {
        "functions": [
            func(f, name=f.__name__, timeout=timeout, keep_result=0, max_tries=3)
            for f in (*TASK_JOBS, poll_tasks)
        ],
        "cron_jobs": crons,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": queue,
        "health_check_key": f"{queue}:health-check",
        "job_timeout": timeout,
        "keep_result": 0,
        "max_jobs": 32,
        "poll_delay": 0.1,
        "ctx": {"settings": settings},
    }
