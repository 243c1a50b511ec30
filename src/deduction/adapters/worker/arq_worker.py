"""arq settings: `deduction worker` (or `arq deduction.bootstrap.WorkerSettings`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import func

from deduction.adapters.worker.dispatch import Enqueue, arq_enqueuer
from deduction.adapters.worker.jobs import TASK_JOBS, job_timeout, purge_logs, sweep
from deduction.config import Settings

log = structlog.get_logger(__name__)


def cron_seconds(interval: float) -> set[int]:
    """arq's cron works in whole seconds of the minute: the sweep's ticks within one minute."""
    step = max(1, min(60, round(interval)))
    return set(range(0, 60, step))


OpenContext = Callable[[Settings, Enqueue], AbstractAsyncContextManager[dict[str, Any]]]


def _lifecycle(open_context: OpenContext) -> tuple[Any, Any]:
    """arq's on_startup/on_shutdown: open what the jobs need (given by the composition root)."""

    async def startup(ctx: dict[str, Any]) -> None:
        settings: Settings = ctx["settings"]
        stack = contextlib.AsyncExitStack()
        enqueue = arq_enqueuer(ctx["redis"], settings.worker_queue)
        ctx.update(await stack.enter_async_context(open_context(settings, enqueue)))
        ctx["stack"] = stack
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
            func(f, name=f.__name__, timeout=timeout, keep_result=0, max_tries=3) for f in TASK_JOBS
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
