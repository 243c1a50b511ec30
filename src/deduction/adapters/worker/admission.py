"""Admits queued tasks to the Engine, one decision at a time across every worker process.

A decision holds a PostgreSQL advisory lock (one per Engine URL) and first waits until the
read tables include every event stored before it took the lock: so it counts the slots
taken by every earlier decision, whichever process made it, and no task is admitted twice
(its "submission requested" event takes it out of the queue).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import psycopg
import structlog

from deduction.application.admission import Caps, choose, free_slots
from deduction.application.findings import SubmitPlan
from deduction.application.ports import Engine, EngineError
from deduction.application.reports import EngineReports
from deduction.application.services import ServiceBusyError, Services
from deduction.config import Settings
from deduction.domain.engine_load import SamplePolicy
from deduction.projections.engine_load import PostgresEngineLoadView
from deduction.projections.queue import PostgresQueueView, queued
from deduction.projections.runner import ProjectionRunner, head_position

log = structlog.get_logger(__name__)
HEADS_LOOKED_AT = 1000  # with only an agents cap, the walk stops long before this
CATCH_UP_TIMEOUT = 10.0
LOAD_READ_EVERY = 1.0  # seconds: the Engine's load is read at most this often, per process
_STATE = f"SELECT submission_attempts > 0, {queued('t')} FROM deduction_task t WHERE id = %s"


def caps_of(settings: Settings) -> Caps:
    return Caps(settings.engine_max_running_tasks, settings.engine_max_running_agents,
                settings.engine_max_cpu_percent, settings.engine_max_memory_percent)  # fmt: skip


def sample_policy(settings: Settings) -> SamplePolicy:
    return SamplePolicy(settings.engine_load_sample_interval, settings.engine_load_sample_delta,
                        settings.engine_max_cpu_percent, settings.engine_max_memory_percent)  # fmt: skip


class LoadSampler:
    """Asks the Engine for its load (not while its circuit is open) and records it when it is
    news (decision D23). An Engine without figures, or failing, changes nothing here."""

    def __init__(self, services: Services, engine: Engine) -> None:
        self.services, self.engine = services, engine
        self.policy = sample_policy(services.settings)
        self._next_read = 0.0

    async def sample(self) -> None:
        now = time.monotonic()
        if now < self._next_read or self.engine.circuit_open():
            return
        self._next_read = now + LOAD_READ_EVERY  # sweeps may come faster than this
        try:
            figures = await self.engine.load()
        except EngineError as e:
            log.debug("engine.load_unavailable", error=str(e))
            return
        cpu, memory = (figures.cpu_percent, figures.memory_percent) if figures else (None, None)
        app, url = self.services.app, self.services.settings.engine_url
        try:
            await self.services.run_poll(app.sample_engine_load, url, cpu, memory, self.policy)
        except ServiceBusyError:
            log.debug("engine.load_not_recorded", reason="poll threads overloaded")


def lock_key(engine_url: str) -> int:
    """A signed 64-bit advisory lock key for one Engine."""
    digest = hashlib.sha256(f"deduction:admission:{engine_url}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Admission:
    """Used by the jobs only when a cap or a load limit is set; without them every task is
    submitted at once."""

    def __init__(
        self,
        services: Services,
        reports: EngineReports,
        caps: Caps,
        sampler: LoadSampler | None = None,
    ) -> None:
        s = services.settings
        self.services, self.reports, self.caps = services, reports, caps
        self.sampler = sampler if caps.by_load else None
        self.queue = PostgresQueueView(services.pool, s.queue_aging)
        self.load = PostgresEngineLoadView(services.pool)
        self._url = s.engine_url
        self._key = lock_key(s.engine_url)

    async def candidates(self) -> list[int]:
        """The tasks the next decisions would admit, read without the lock (a hint: each is
        decided again under it)."""
        load = await self.load.latest(self._url) if self.caps.by_load else None
        if self.caps.overloaded(load):
            return []
        occupied = await self.queue.occupancy()
        limit = min(HEADS_LOOKED_AT, free_slots(occupied.tasks, self.caps, HEADS_LOOKED_AT))
        if limit == 0:
            return []
        heads = await self.queue.heads(limit)
        return choose(heads, occupied.tasks, occupied.agents, self.caps)

    async def admit(self, task_id: int) -> SubmitPlan | bool:
        """The task's SubmitPlan when it is admitted now; True when it already holds a slot
        (a retried submission); False when it waits (or has nothing left to submit)."""
        if self.sampler is not None:
            await self.sampler.sample()  # a fresh reading is recorded before the head is read
        async with self.services.pool.connection() as conn:
            try:
                await conn.execute("SELECT pg_advisory_lock(%s)", [self._key])
            except psycopg.errors.LockNotAvailable:
                return False  # another process is deciding; the sweep asks again
            try:
                return await self._decide(conn, task_id)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", [self._key])

    async def _decide(self, conn: Any, task_id: int) -> SubmitPlan | bool:
        head = await head_position(conn)
        runner = self.services.runner
        # over the lock's connection: a second one from the pool could be held by another
        # decision waiting for this lock
        waits = {"over": conn} if isinstance(runner, ProjectionRunner) else {}
        if not await runner.wait_for(head, CATCH_UP_TIMEOUT, **waits):
            log.warning("admission.read_tables_behind", head=head)
            return False
        cur = await conn.execute(_STATE, [task_id])
        row = await cur.fetchone()
        if row is None or row[0]:
            return row is not None
        if not row[1]:
            return False
        load = await self.load.latest(self._url, conn) if self.caps.by_load else None
        if self.caps.overloaded(load):
            return False
        occupied = await self.queue.occupancy(conn)
        limit = min(HEADS_LOOKED_AT, free_slots(occupied.tasks, self.caps, HEADS_LOOKED_AT))
        heads = await self.queue.heads(limit, conn) if limit else []
        chosen = choose(heads, occupied.tasks, occupied.agents, self.caps, load)
        if not chosen or chosen[0] != task_id:
            # Strictly in queue order: when two slots free at once, the second head's job may
            # decide first; it waits, and the first head's admission asks for it (submit_task).
            return False
        plan: SubmitPlan | None = await self.services.run_poll(
            self.reports.request_submission, task_id
        )
        if plan is None:
            return False
        log.info("task.admitted", task_id=task_id, running_tasks=occupied.tasks + 1)
        return plan
