"""The worker's jobs: `async def verb_noun(ctx, ...)`, the same functions under arq or in-process.

ctx holds what on_startup made: `monitor` (TaskMonitor), `pool` (read tables), `settings`
and `enqueue(job_name, task_id)`, which never runs a job twice at once for one task.
"""

from __future__ import annotations

from typing import Any

import structlog

from deduction.adapters.worker.queries import find_work, purge_read_logs
from deduction.application.findings import Outcome

log = structlog.get_logger(__name__)
Ctx = dict[str, Any]


async def _follow_up(ctx: Ctx, task_id: int, outcome: Outcome | None) -> None:
    if outcome is None:
        return
    if outcome.needs_stop:
        await ctx["enqueue"]("send_stop", task_id)
    if outcome.pending_updates:
        await ctx["enqueue"]("send_update", task_id)


async def submit_task(ctx: Ctx, task_id: int) -> None:
    outcome = await ctx["monitor"].submit_task(task_id)
    await _follow_up(ctx, task_id, outcome)
    if outcome is not None and outcome.status == "running":
        await ctx["enqueue"]("poll_task", task_id)


async def poll_task(ctx: Ctx, task_id: int) -> None:
    await _follow_up(ctx, task_id, await ctx["monitor"].poll_task(task_id))


async def send_update(ctx: Ctx, task_id: int) -> None:
    await ctx["monitor"].send_update(task_id)


async def send_stop(ctx: Ctx, task_id: int) -> None:
    await ctx["monitor"].send_stop(task_id)


async def sweep(ctx: Ctx) -> None:
    """Re-derive every pending piece of work from the read tables (Redis holds no truth)."""
    settings = ctx["settings"]
    work = await find_work(ctx["pool"], recent_seconds=max(60.0, 10 * settings.task_poll_interval))
    for job, task_id in work:
        await ctx["enqueue"](job, task_id)
    if work:
        log.debug("sweep.enqueued", jobs=len(work))


async def purge_logs(ctx: Ctx) -> None:
    """Remove read-table log lines of tasks that ended LOG_RETENTION_DAYS ago (0: keep all)."""
    settings = ctx["settings"]
    if settings.log_retention_days <= 0:
        return
    removed = await purge_read_logs(
        ctx["pool"], settings.log_retention_days, budget_s=ctx.get("purge_budget", 20.0)
    )
    if removed:
        log.info("logs.purged", lines=removed, older_than_days=settings.log_retention_days)


TASK_JOBS = (submit_task, poll_task, send_update, send_stop)
JOBS = {f.__name__: f for f in (*TASK_JOBS, sweep, purge_logs)}


def job_timeout(engine_timeout: float) -> float:
    """A poll makes at most two rounds of Engine calls, each bounded by ENGINE_TIMEOUT."""
    return 2 * engine_timeout + 5
