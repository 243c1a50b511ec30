"""Runs the jobs inside `deduction serve` when there is no Redis: an asyncio queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from deduction.adapters.worker.jobs import JOBS, job_timeout
from deduction.config import Settings

log = structlog.get_logger(__name__)
Key = tuple[str, int | None]
PURGE_EVERY = 3600.0
STOP_GRACE = 10.0  # seconds a stop keeps cancelling jobs that do not end


class InProcessWorker:
    """A queue of (job, task) keys; a key already queued or running is not queued again,
    so one task is never polled (or submitted, stopped, updated) twice at once."""

    def __init__(self, settings: Settings, concurrency: int = 32) -> None:
        self.settings, self._concurrency = settings, concurrency
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()  # queued or running
        self._timeout = job_timeout(settings.engine_timeout)
        self.ctx: dict[str, Any] = {}
        self.done = 0

    async def enqueue(self, job: str, task_id: int | None = None) -> bool:
        if job not in JOBS:
            raise LookupError(f"no job named {job!r}")
        key = (job, task_id)
        if key in self._pending:
            return False
        self._pending.add(key)
        self._queue.put_nowait(key)
        return True

    async def _consume(self) -> None:
        while True:
            key = await self._queue.get()
            job, task_id = key
            args = () if task_id is None else (task_id,)
            try:
                await asyncio.wait_for(JOBS[job](self.ctx, *args), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a failed job must not stop the worker
                error = f"{type(e).__name__}: {e}"
                log.warning("job.failed", job=job, task_id=task_id, error=error)
            finally:
                self._pending.discard(key)
                self.done += 1
                self._queue.task_done()

    async def idle(self) -> None:
        """Wait until no job is queued or running (follow-ups included)."""
        await self._queue.join()

    async def _every(self, seconds: float, job: str) -> None:
        while True:
            await self.enqueue(job)
            await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def running(self, ctx: dict[str, Any]) -> AsyncIterator[InProcessWorker]:
        """Run consumers, the sweep (unless TASK_POLL_ENABLED is false) and the hourly purge."""
        self.ctx = ctx
        tasks = [asyncio.create_task(self._consume()) for _ in range(self._concurrency)]
        tasks.append(asyncio.create_task(self._every(PURGE_EVERY, "purge_logs")))
        if self.settings.task_poll_enabled:
            every = self.settings.task_poll_interval
            tasks.append(asyncio.create_task(self._every(every, "sweep")))
        log.info("worker.started", mode="in-process", sweep=self.settings.task_poll_enabled)
        try:
            yield self
        finally:
            await stop_all(tasks)


async def stop_all(tasks: list[asyncio.Task[Any]], grace: float = STOP_GRACE) -> None:
    """Cancel `tasks` until they end. A job may lose a cancellation (asyncio.wait_for in
    Python 3.11 drops one that arrives as its job finishes; a job may suppress one), and its
    consumer then waits on the queue again: cancelling once and waiting would wait forever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
        if pending and loop.time() > deadline:
            log.warning("worker.stop_incomplete", tasks=len(pending))
            return
