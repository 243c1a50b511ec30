"""Dispatchers: hand a task's follow-up work to the worker (in-process queue or arq)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from arq.connections import ArqRedis

log = structlog.get_logger(__name__)
Enqueue = Callable[..., Awaitable[bool]]


def job_id(queue: str, job: str, task_id: int | None) -> str:
    """One id per (job, task): arq refuses a second copy while one is queued or running."""
    return f"{queue}:{job}" if task_id is None else f"{queue}:{job}:{task_id}"


def arq_enqueuer(redis: ArqRedis, queue: str) -> Enqueue:
    """`enqueue(job, task_id)`; `enqueue(job, first_id, batch)` queues a job over a batch of
    tasks (the job id names its first)."""

    async def enqueue(job: str, task_id: int | None = None, batch: list[int] | None = None) -> bool:
        args: tuple[Any, ...] = () if task_id is None else (task_id,)
        if batch is not None:
            args = (batch,)
        queued = await redis.enqueue_job(
            job, *args, _job_id=job_id(queue, job, task_id), _queue_name=queue
        )
        return queued is not None

    return enqueue


class JobDispatcher:
    """The Dispatcher port over an enqueue function. A failure to enqueue is logged, not
    raised: the command is saved, and the sweep finds the work from the event store."""

    def __init__(self, enqueue: Enqueue) -> None:
        self._enqueue = enqueue

    async def _send(self, job: str, task_id: int) -> None:
        try:
            await self._enqueue(job, task_id)
        except Exception as e:  # noqa: BLE001 - Redis down must not fail the API call
            log.warning("dispatch.failed", job=job, task_id=task_id, error=str(e))

    async def task_created(self, task_id: int) -> None:
        await self._send("submit_task", task_id)

    async def stop_requested(self, task_id: int) -> None:
        await self._send("send_stop", task_id)

    async def update_requested(self, task_id: int) -> None:
        await self._send("send_update", task_id)
