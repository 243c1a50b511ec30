"""The in-process worker stops within bounds, whatever its jobs do with a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deduction.adapters.worker import inprocess
from deduction.config import Settings


async def test_it_stops_even_when_a_job_swallows_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio.wait_for (Python 3.11) can lose a cancellation that arrives as its job ends, as
    can a job that suppresses it: the consumer then loops back to the queue, and a shutdown
    that cancelled it once waited for it forever."""
    started, swallowed = asyncio.Event(), asyncio.Event()

    async def stubborn(ctx: dict[str, Any], task_id: int) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # and carry on as if nothing happened

    monkeypatch.setitem(inprocess.JOBS, "stubborn", stubborn)
    worker = inprocess.InProcessWorker(Settings(task_poll_enabled=False), concurrency=2)

    async def run_and_stop() -> None:
        async with worker.running({}):
            await worker.enqueue("stubborn", 1)
            await started.wait()

    await asyncio.wait_for(run_and_stop(), 10)
    assert swallowed.is_set()
