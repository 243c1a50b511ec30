"""The worker's jobs: `async def verb_noun(ctx, ...)`, the same functions under arq or in-process.

ctx holds what on_startup made: `monitor` (TaskMonitor), `pool` (read tables, queried through
the tasks and logs views), `settings` and `enqueue(job_name, task_id)`, which never runs a job
twice at once for one task. Under arq it also holds `claims` (PollClaims): the sweep's polls
then go in batches (`poll_tasks`), and every poll first claims its task, so a task is still
never polled twice at once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

import structlog

from deduction.application.findings import Outcome
from deduction.domain import TERMINAL
from deduction.projections.logs import PostgresLogView
from deduction.projections.tasks import OpenTaskRow, PostgresTaskView

log = structlog.get_logger(__name__)
Ctx = dict[str, Any]
Job = TypeVar("Job", bound=Callable[..., Awaitable[None]])


def timed(job: Job) -> Job:
    """The job, its duration and outcome observed when ctx carries `metrics`."""
    name = job.__name__

    @functools.wraps(job)
    async def run(ctx: Ctx, *args: Any) -> None:
        metrics = ctx.get("metrics")
        if metrics is None:
            return await job(ctx, *args)
        started, outcome = time.perf_counter(), "error"
        try:
            await job(ctx, *args)
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.observe_job(name, outcome, time.perf_counter() - started)

    return cast(Job, run)


POLL_BATCH = 4  # tasks per poll_tasks job: its queue work (Redis round trips) is shared


class Claims(Protocol):
    """Marks held on tasks while they are polled, across every worker process."""

    async def take(self, task_ids: Sequence[int]) -> list[int]: ...

    async def give_back(self, task_ids: Sequence[int]) -> None: ...


async def _follow_up(ctx: Ctx, task_id: int, outcome: Outcome | None) -> None:
    if outcome is None:
        return
    if outcome.needs_stop:
        await ctx["enqueue"]("send_stop", task_id)
    if outcome.pending_updates:
        await ctx["enqueue"]("send_update", task_id)


@timed
async def submit_task(ctx: Ctx, task_id: int) -> None:
    """Submit a task once the admission lets it go (with a cap set); else it stays queued."""
    plan, admission = None, ctx.get("admission")
    if admission is not None and not ctx["engine"].circuit_open():
        decision = await admission.admit(task_id)
        if decision is False:
            return
        plan = None if decision is True else decision
    outcome = await ctx["monitor"].submit_task(task_id, plan)
    await _follow_up(ctx, task_id, outcome)
    if plan is not None:  # admitted now: the next head, if it fits, is decided next
        await admit_next(ctx)
    if outcome is not None and outcome.status == "running":
        await ctx["enqueue"]("poll_task", task_id)
    if outcome is not None and outcome.status in TERMINAL:
        await admit_next(ctx)


@timed
async def poll_task(ctx: Ctx, task_id: int) -> None:
    claims: Claims | None = ctx.get("claims")
    if claims is None:
        await _poll(ctx, task_id)
        return
    if not await claims.take([task_id]):
        return  # another poll is under way: what it learns is what this one would
    try:
        await _poll(ctx, task_id)
    finally:
        await claims.give_back([task_id])


@timed
async def poll_tasks(ctx: Ctx, task_ids: list[int]) -> None:
    """The sweep's polls under arq, several in one job (side by side, so the job is bounded
    as one poll is); a task claimed by another poll is left to it, and one poll's failure is
    logged, not spread to the others (the next sweep polls every task again)."""
    claims: Claims = ctx["claims"]
    mine = await claims.take(task_ids)
    try:
        results = await asyncio.gather(*(_poll(ctx, t) for t in mine), return_exceptions=True)
    finally:
        await claims.give_back(mine)
    for task_id, result in zip(mine, results):
        if isinstance(result, Exception):
            error = f"{type(result).__name__}: {result}"
            log.warning("job.failed", job="poll_task", task_id=task_id, error=error)
        elif isinstance(result, BaseException):
            raise result  # cancelled (the job's timeout, a shutdown)


async def _poll(ctx: Ctx, task_id: int) -> None:
    outcome = await ctx["monitor"].poll_task(task_id)
    metrics = ctx.get("metrics")
    if metrics is not None and outcome is not None:
        metrics.log_lines.inc(outcome.lines)
        metrics.log_gaps.inc(outcome.gaps)
    await _follow_up(ctx, task_id, outcome)
    if outcome is not None and outcome.status in TERMINAL:
        await admit_next(ctx)  # its slot is free: the next queued task need not wait a sweep


async def admit_next(ctx: Ctx) -> None:
    """Queue submit_task for the tasks the admission would take now."""
    admission = ctx.get("admission")
    if admission is None:
        return
    for task_id in await admission.candidates():
        await ctx["enqueue"]("submit_task", task_id)


@timed
async def send_update(ctx: Ctx, task_id: int) -> None:
    await ctx["monitor"].send_update(task_id)


@timed
async def send_stop(ctx: Ctx, task_id: int) -> None:
    await ctx["monitor"].send_stop(task_id)


def _jobs(task: OpenTaskRow, admission: bool) -> list[str]:
    """With admission, a queued task is submitted by admit_next, in queue order."""
    active = task.status in ("pending", "running")
    stop_pending = task.stop_requested and not task.stop_delivered
    jobs = []
    submittable = task.status == "pending" and not task.submitted and not task.stop_requested
    if submittable and (task.admitted or not admission):
        jobs.append("submit_task")
    if task.submitted and (active or (task.recently_ended and not stop_pending)):
        jobs.append("poll_task")  # an ended task: its logs are read once more, then nothing
    if task.submitted and stop_pending:
        jobs.append("send_stop")
    if task.submitted and active and task.pending_updates > 0:
        jobs.append("send_update")
    return jobs


@timed
async def sweep(ctx: Ctx) -> None:
    """Re-derive every pending piece of work from the read tables (Redis holds no truth)."""
    interval, metrics = ctx["settings"].task_poll_interval, ctx.get("metrics")
    started = time.perf_counter()
    if metrics is not None:
        metrics.sweep_started(interval, ctx.get("score"))
    tasks = await PostgresTaskView(ctx["pool"]).open_tasks(max(60.0, 10 * interval))
    if tasks and ctx.get("load_sampler") is not None:
        await ctx["load_sampler"].sample()  # before admit_next, which reads the figures
    admission = ctx.get("admission") is not None
    work = [(job, task.id) for task in tasks for job in _jobs(task, admission)]
    if "claims" in ctx:  # arq: polls in batches (each poll claims its task)
        polls = sorted(task_id for job, task_id in work if job == "poll_task")
        work = [(job, task_id) for job, task_id in work if job != "poll_task"]
        for i in range(0, len(polls), POLL_BATCH):
            batch = polls[i : i + POLL_BATCH]
            await ctx["enqueue"]("poll_tasks", batch[0], batch)
    for job, task_id in work:
        await ctx["enqueue"](job, task_id)
    if work:
        log.debug("sweep.enqueued", jobs=len(work))
    await admit_next(ctx)
    if metrics is not None:
        metrics.poll_cycle.observe(time.perf_counter() - started)


@timed
async def purge_logs(ctx: Ctx) -> None:
    """Remove read-table log lines of tasks that ended LOG_RETENTION_DAYS ago (0: keep all)."""
    settings = ctx["settings"]
    if settings.log_retention_days <= 0:
        return
    removed = await PostgresLogView(ctx["pool"]).purge_ended_before(
        settings.log_retention_days, budget_s=ctx.get("purge_budget", 20.0)
    )
    if removed:
        log.info("logs.purged", lines=removed, older_than_days=settings.log_retention_days)


TASK_JOBS = (submit_task, poll_task, send_update, send_stop)
JOBS = {f.__name__: f for f in (*TASK_JOBS, sweep, purge_logs)}  # poll_tasks: arq only


def job_timeout(engine_timeout: float) -> float:
    """A poll makes at most two rounds of Engine calls, each bounded by ENGINE_TIMEOUT."""
    return 2 * engine_timeout + 5
