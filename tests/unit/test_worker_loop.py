"""An arq worker process runs on uvloop, as `deduction serve` does."""

from __future__ import annotations

import asyncio

import uvloop
from arq.connections import RedisSettings
from arq.worker import func

from deduction.adapters.worker.arq_worker import ResilientWorker, worker_loop
from deduction.adapters.worker.jobs import poll_tasks


def test_a_worker_made_after_worker_loop_runs_on_uvloop() -> None:
    """arq's Worker takes the thread's current loop when it is made (a new asyncio loop when
    there is none): `worker_loop()` makes that one a uvloop loop."""
    loop = worker_loop()
    try:
        worker = ResilientWorker(
            functions=[func(poll_tasks, name="poll_tasks")],
            redis_settings=RedisSettings(),
            handle_signals=False,
        )
        assert worker.loop is loop
        assert isinstance(worker.loop, uvloop.Loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
