"""The sweep re-derives all pending work from the tables; retention purges read rows only."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest
from psycopg import AsyncConnection

from deduction.adapters.worker import InProcessWorker, purge_logs, sweep
from deduction.application.findings import SubmitPlan
from deduction.application.services import Services
from deduction.bootstrap import READ_POOL, open_dispatch, open_services, open_worker_context
from deduction.domain.logs import log_stream_id
from deduction.projections.tasks import PostgresTaskView
from tests.support.api import settings_for
from tests.support.engine import LiveEngine, live_engine, monitor_for, run_to_end
from tests.support.plan import create_task, new_task
from tests.support.waits import settled, wait_until


class Recorder:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, int | None]] = []

    async def __call__(self, job: str, task_id: int | None = None) -> bool:
        self.jobs.append((job, task_id))
        return True


async def _sweep(services: Services) -> set[tuple[str, int | None]]:
    await settled(services)
    recorder = Recorder()
    await sweep({"pool": services.pool, "settings": services.settings, "enqueue": recorder})
    return set(recorder.jobs)


async def test_the_sweep_finds_submissions_polls_updates_and_stops(services: Services) -> None:
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        app = services.app
        pending = await services.run_sync(create_task, app, new_task("pending"))
        running = await services.run_sync(create_task, app, new_task("running"))
        stopped = await services.run_sync(create_task, app, new_task("stopped"))
        for task_id in (running, stopped):
            await monitor.submit_task(task_id)
            await monitor.poll_task(task_id)
        red = app.get_task(running).execution_ids[0]
        await services.run_sync(app.update_config, running, [(red, {"x": 1})], "bob")
        await services.run_sync(app.request_stop, stopped, "alice")
        assert await _sweep(services) == {
            ("submit_task", pending), ("poll_task", running), ("send_update", running),
            ("send_stop", stopped),
        }  # fmt: skip
        await monitor.send_update(running)
        await monitor.send_stop(stopped)
        # a stopped task is read once more (its logs), then only pending and running remain
        assert await _sweep(services) == {
            ("submit_task", pending), ("poll_task", running), ("poll_task", stopped),
        }  # fmt: skip


async def test_a_crash_after_submission_requested_is_reconciled_by_the_sweep(
    services: Services,
) -> None:
    async with live_engine() as live, monitor_for(services, live.url) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        plan = await services.run_sync(monitor.reports.request_submission, task_id)
        await monitor.engine.submit(plan.payload, str(task_id))  # then the worker dies
        assert ("submit_task", task_id) in await _sweep(services)
        outcome = await monitor.submit_task(task_id)
        assert outcome is not None and outcome.status == "running"
        assert (live.engine.stats["runs"], live.engine.stats["replays"]) == (1, 1)


async def test_log_retention_removes_read_rows_of_old_tasks_and_keeps_the_events(
    services: Services,
) -> None:
    async with live_engine() as live, monitor_for(services, live.url) as monitor:
        old, recent = [await services.run_sync(create_task, services.app, new_task(n))
                       for n in ("old", "recent")]  # fmt: skip
        for task_id in (old, recent):
            await monitor.submit_task(task_id)
            assert await run_to_end(monitor, task_id) == "completed"
    await settled(services)
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        await conn.execute("UPDATE deduction_task SET end_time = now() - interval '31 days'"
                           " WHERE id = %s", [old])  # fmt: skip
        ctx: dict[str, Any] = {"pool": services.pool, "settings": services.settings}
        await purge_logs(ctx)
        lines, counts = {}, {}
        for task_id in (old, recent):
            cur = await conn.execute("SELECT count(*) FROM agent_execution_log"
                                     " WHERE deduction_task_id = %s", [task_id])  # fmt: skip
            lines[task_id] = (await cur.fetchone())[0]
            cur = await conn.execute("SELECT coalesce(sum(lines), 0) FROM agent_execution_log_count"
                                     " WHERE deduction_task_id = %s", [task_id])  # fmt: skip
            counts[task_id] = (await cur.fetchone())[0]
    assert lines[old] == counts[old] == 0
    assert lines[recent] == counts[recent] > 0
    execution = services.app.get_task(old).execution_ids[0]
    archived = services.app.recorder.select_events(log_stream_id(execution))
    assert sum(len(services.app.mapper.to_domain_event(e).lines) for e in archived) > 0


async def test_the_in_process_worker_runs_a_task_and_never_queues_a_job_twice(
    db_url: str, live: LiveEngine
) -> None:
    settings = settings_for(db_url, engine_url=live.url, task_poll_enabled=True,
                            task_poll_interval=0.05)  # fmt: skip
    async with open_services(settings) as services, open_dispatch(services):
        task_id = await services.run_sync(create_task, services.app)
        await services.dispatcher.task_created(task_id)

        async def completed() -> bool:
            return services.app.get_task(task_id).status == "completed"

        await wait_until(completed, timeout=20)
    worker = InProcessWorker(settings)
    assert await worker.enqueue("poll_task", 1) and not await worker.enqueue("poll_task", 1)
    assert await worker.enqueue("poll_task", 2) and await worker.enqueue("send_stop", 1)
    with pytest.raises(LookupError):
        await worker.enqueue("no_such_job", 1)


async def test_a_stopped_task_is_read_once_more_however_late_its_stop_was_delivered(
    services: Services,
) -> None:
    """The last read of an ended task's logs is due until every agent the Engine ran is
    drained, not only within a minute of the end: a stop delivered late (workers or Redis down
    meanwhile) still gets the lines written before it."""
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        app = services.app
        task_id = await services.run_sync(create_task, app, new_task("stopped-late"))
        await monitor.submit_task(task_id)
        await wait_until(lambda: monitor.poll_task(task_id), timeout=5)
        await services.run_sync(app.request_stop, task_id, "alice")
        engine_task_id = await services.run_sync(monitor.reports.plan_stop, task_id)
        await monitor.engine.stop(engine_task_id)
        await services.run_sync(monitor.reports.record_stop_delivered, task_id)
        # ... and the worker dies before its read of the last lines
        await settled(services)
        view = PostgresTaskView(services.pool)
        rows = {row.id: row for row in await view.open_tasks(recent_seconds=0)}
        assert task_id in rows and rows[task_id].recently_ended  # as if the end was long ago
        await monitor.poll_task(task_id)  # reads every agent's logs to the end
        await settled(services)
        assert task_id not in {row.id for row in await view.open_tasks(recent_seconds=0)}


async def test_admissions_in_a_worker_wait_for_the_read_tables_over_its_read_pool(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs no projections; each admission waits until the read tables include the
    previous one, and reads the tracking rows through the read pool (its stated budget)."""
    ids = [await services.run_sync(create_task, services.app, new_task(f"capped-{i}"))
           for i in range(6)]  # fmt: skip
    await settled(services)
    worker_settings = settings_for(services.database_url, engine_max_running_tasks=100)
    async with open_services(worker_settings, role="worker") as worker, \
            open_worker_context(worker, Recorder()) as ctx:  # fmt: skip
        opened: list[str] = []
        connect = AsyncConnection.connect.__func__  # type: ignore[attr-defined]

        async def counted(cls: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(str(args[:1]))
            return await connect(cls, *args, **kwargs)

        monkeypatch.setattr(AsyncConnection, "connect", classmethod(counted))
        for task_id in ids[:3]:  # each decision saves an event the next one waits for
            assert isinstance(await ctx["admission"].admit(task_id), SubmitPlan)
        # at once: one holds the lock and waits for the read tables while another holds a
        # connection waiting for the lock; neither may starve the other of connections
        decided = await asyncio.gather(*(ctx["admission"].admit(t) for t in ids[3:]))
        assert all(isinstance(d, SubmitPlan) for d in decided), decided
        monkeypatch.undo()
    assert len(opened) <= READ_POOL["worker"], opened


class PollsSeen:
    """Stands in for the TaskMonitor: records which tasks were polled, learns nothing."""

    def __init__(self) -> None:
        self.polled: list[int] = []

    async def poll_task(self, task_id: int) -> None:
        self.polled.append(task_id)


@pytest.mark.redis
async def test_a_batch_of_polls_leaves_a_task_claimed_by_another_poll_to_it(
    redis_url: str,
) -> None:
    from arq.connections import RedisSettings, create_pool

    from deduction.adapters.worker.arq_worker import PollClaims
    from deduction.adapters.worker.jobs import poll_tasks

    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    queue = f"dtest:{uuid4().hex[:10]}"
    try:
        ctx: dict[str, Any] = {"redis": redis, "monitor": PollsSeen()}
        claims = ctx["claims"] = PollClaims(ctx, queue, ttl=30)
        assert await claims.take([2]) == [2]  # another worker is polling task 2
        await poll_tasks(ctx, [1, 2, 3])
        assert ctx["monitor"].polled == [1, 3]
        assert await claims.take([1, 2, 3]) == [1, 3]  # given back; 2 is still the other's
    finally:
        await redis.delete(*[k async for k in redis.scan_iter(f"{queue}:*")] or ["-"])
        await redis.aclose()
