"""The monitor against the reference Engine on a loopback port, with the real event store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from psycopg import AsyncConnection

from deduction.adapters.engine import CircuitBreaker
from deduction.application.ports import EngineLogLine, EngineTaskStatus
from deduction.application.services import Services
from deduction.domain import DeductionTask
from tests.support.engine import live_engine, monitor_for, run_to_end
from tests.support.logs import engine_multiset, stored_multiset
from tests.support.plan import create_task, new_task
from tests.support.waits import settled, wait_until


async def _row(services: Services, sql: str, *args: Any) -> Any:
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        cur = await conn.execute(sql, list(args))
        return await cur.fetchone()


async def _assert_logs_complete(services: Services, live: Any, task_id: int) -> int:
    """Every execution's read-table lines equal what its Engine agent emitted (multisets)."""
    await settled(services)
    task = services.app.get_task(task_id)
    emitted = live.emitted(task.engine_task_id)
    total = 0
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        for eid in task.execution_ids:
            execution = services.app.get_execution(eid)
            expected = engine_multiset(emitted[execution.engine_agent_id])
            assert await stored_multiset(conn, eid) == expected
            total += sum(expected.values())
    return total


@pytest.mark.parametrize(
    "knobs",
    [
        {"since_inclusive": False, "ts_resolution": "ms"},
        {"since_inclusive": True, "ts_resolution": "ms"},
        {"since_inclusive": False, "ts_resolution": "s", "collide_rate": 0.5},
        {"since_inclusive": True, "ts_resolution": "s", "duplicate_rate": 0.3},
        {"since_inclusive": True, "ts_resolution": "us", "extras": True},
    ],
    ids=["exclusive-ms", "inclusive-ms", "exclusive-s", "inclusive-s-dups", "extras-seq"],
)
async def test_plan_example_completes_with_exactly_the_emitted_log_lines(
    services: Services, knobs: dict[str, Any]
) -> None:
    """Colliding timestamps, duplicate lines, either `since`: no line lost, none twice."""
    async with live_engine(**knobs) as live, monitor_for(services, live.url) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        submitted = await monitor.submit_task(task_id)
        assert submitted is not None and submitted.status == "running"
        assert await run_to_end(monitor, task_id) == "completed"
        lines = await _assert_logs_complete(services, live, task_id)
    assert lines > 20
    row = await _row(services, "SELECT status, total_agents, completed_agents, failed_agents"
                     " FROM deduction_task WHERE id = %s", task_id)  # fmt: skip
    assert row == ("completed", 2, 2, 0)
    task = services.app.get_task(task_id)
    for eid in task.execution_ids:
        execution = services.app.get_execution(eid)
        assert (execution.status, execution.progress) == ("completed", 100)
        assert execution.result and "score" in execution.result


async def test_a_failed_agent_is_restarted_up_to_max_retry_then_fails_the_task(
    services: Services,
) -> None:
    async with live_engine(fail_rate=1.0) as live, monitor_for(services, live.url) as monitor:
        new = new_task(params=[{"attack_strategy": "aggressive"}], max_retry=2)
        task_id = await services.run_sync(create_task, services.app, new)
        await monitor.submit_task(task_id)
        assert await run_to_end(monitor, task_id) == "failed"
        await _assert_logs_complete(services, live, task_id)
        assert live.engine.stats["restarts"] == 2
    task = services.app.get_task(task_id)
    execution = services.app.get_execution(task.execution_ids[0])
    assert (execution.status, execution.retry_count) == ("failed", 2)
    assert "RedTeamAgent" in task.error_message
    assert str(execution.execution_id) in task.error_message
    await settled(services)
    row = await _row(
        services,
        "SELECT count(*) FILTER (WHERE change_description LIKE '%%restarted%%'),"
        " count(*) FILTER (WHERE change_description LIKE '%%retrying%%')"
        " FROM deduction_task_history WHERE deduction_task_id = %s",
        task_id,
    )
    assert row == (2, 2)


async def test_without_a_restart_operation_a_failed_agent_fails_at_once(services: Services) -> None:
    async with live_engine(fail_rate=1.0, restart=False) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        assert await run_to_end(monitor, task_id) == "failed"
    task = services.app.get_task(task_id)
    errors = [services.app.get_execution(e).error for e in task.execution_ids]
    assert all("not retried: the Engine cannot restart agents" in (e or "") for e in errors)


async def test_a_rejected_submission_fails_the_task_with_the_engines_message(
    services: Services,
) -> None:
    async with live_engine(reject_submissions="scheme 1234567890 is not installed") as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        outcome = await monitor.submit_task(task_id)
    assert outcome is not None and outcome.status == "failed"
    task = services.app.get_task(task_id)
    assert task.error_message == (
        "the Engine rejected the submission: scheme 1234567890 is not installed"
    )
    assert all(services.app.get_execution(e).status == "failed" for e in task.execution_ids)


async def test_engine_down_shows_unreachable_then_recovers(services: Services) -> None:
    """Not failed at the first error: unreachable (since when) once, reachable again, completes."""
    breaker = CircuitBreaker(threshold=3, cooldown=0.1)
    async with live_engine(duration_min=1.0, duration_max=1.0) as live, \
            monitor_for(services, live.url, timeout=0.5, breaker=breaker) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await monitor.poll_task(task_id)
        await live.stop()
        for _ in range(3):
            outcome = await monitor.poll_task(task_id)
            assert outcome is not None and outcome.status == "running"
        await settled(services)
        since, error = await _row(services, "SELECT engine_unreachable_since, engine_error"
                                  " FROM deduction_task WHERE id = %s", task_id)  # fmt: skip
        assert since is not None and "Connect" in error
        await live.start()
        assert await run_to_end(monitor, task_id) == "completed"
        await _assert_logs_complete(services, live, task_id)
    await settled(services)
    assert await _row(services, "SELECT engine_unreachable_since FROM deduction_task"
                      " WHERE id = %s", task_id) == (None,)  # fmt: skip
    names = [type(e).__name__ for e in services.app.events.get(DeductionTask.create_id(task_id))]
    assert names.count("EngineUnreachable") == 1 and names.count("EngineReachable") == 1


async def test_an_engine_unreachable_past_the_deadline_fails_the_task(services: Services) -> None:
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url, timeout=0.3, deadline=0.2) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await live.stop()

        async def failed() -> bool:
            outcome = await monitor.poll_task(task_id)
            return outcome is not None and outcome.status == "failed"

        await wait_until(failed, timeout=15, interval=0.1)
    task = services.app.get_task(task_id)
    assert task.error_message.startswith("the Engine has been unreachable since")


async def test_reports_after_a_stop_change_nothing_but_the_logs_are_drained(
    services: Services,
) -> None:
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await wait_until(lambda: monitor.poll_task(task_id), timeout=5)
        await services.run_sync(services.app.request_stop, task_id, "alice")
        before = len(list(services.app.events.get(DeductionTask.create_id(task_id))))
        await monitor.poll_task(task_id)  # the Engine still says running: nothing changes
        task = services.app.get_task(task_id)
        assert task.status == "stopped" and task.version == before
        await monitor.send_stop(task_id)
        engine_task = live.engine.sim.tasks[task.engine_task_id]
        assert engine_task.status(live.engine.sim.clock()) == "stopped"
        assert services.app.get_task(task_id).stop_delivered
        await _assert_logs_complete(services, live, task_id)


async def test_a_submission_retried_after_a_crash_does_not_start_a_second_run(
    services: Services,
) -> None:
    """The crash falls between the Engine accepting and our recording it; the retry carries
    the same idempotency key, so the Engine answers with the run it already made."""

    class Crash(Exception):
        pass

    class CrashAfterSubmit:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def submit(self, payload: dict[str, Any], idempotency_key: str) -> str:
            await self.inner.submit(payload, idempotency_key)
            raise Crash

        async def task_status(self, engine_task_id: str) -> EngineTaskStatus:
            raise AssertionError("not reached")

        async def agent_logs(self, *args: Any) -> list[EngineLogLine]:
            raise AssertionError("not reached")

        async def update(self, engine_task_id: str, payload: dict[str, Any]) -> None: ...

        async def stop(self, engine_task_id: str) -> None: ...

        async def restart_agent(self, engine_agent_id: str) -> None: ...

        def circuit_open(self) -> bool:
            return False

        def failing_since(self) -> str | None:
            return None

        restart_supported: bool | None = None

    async with live_engine() as live, monitor_for(services, live.url) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        real = monitor.engine
        monitor.engine = CrashAfterSubmit(real)
        with pytest.raises(Crash):
            await monitor.submit_task(task_id)
        task = services.app.get_task(task_id)
        assert (task.status, task.submission_attempts, task.engine_task_id) == ("pending", 1, None)
        monitor.engine = real
        outcome = await monitor.submit_task(task_id)
        assert outcome is not None and outcome.status == "running"
        assert (live.engine.stats["runs"], live.engine.stats["replays"]) == (1, 1)
        assert services.app.get_task(task_id).submission_attempts == 2


async def test_an_update_reaches_the_engine_with_the_merged_params(services: Services) -> None:
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await monitor.poll_task(task_id)
        task = services.app.get_task(task_id)
        red = task.execution_ids[0]
        await services.run_sync(
            services.app.update_config, task_id, [(red, {"attack_strategy": "stealth"})], "bob"
        )
        outcome = await monitor.send_update(task_id)
        assert outcome is not None and not outcome.pending_updates
        agent = live.engine.sim.agents[services.app.get_execution(red).engine_agent_id]
        assert agent.params == {"attack_strategy": "stealth", "target": "192.168.1.100"}
        assert any("params updated" in line[2] for line in agent.lines)


async def test_one_poll_reads_a_bounded_number_of_log_bytes_and_the_next_goes_on(
    services: Services,
) -> None:
    """Once a poll has read its budget of Engine log answers (all agents together), no agent
    is asked again in that poll (the reads already under way finish: one answer per agent);
    the next polls carry on from the cursors and every emitted line arrives once."""
    knobs = {"page_cap": 20, "log_rate": 400.0, "collide_rate": 0.0, "duration_min": 0.5,
             "duration_max": 0.5}  # fmt: skip
    async with live_engine(**knobs) as live, monitor_for(services, live.url) as monitor:
        monitor.reports.max_log_bytes = 1  # every poll: one answer in all
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        reads_per_poll = []
        for _ in range(600):
            before = live.engine.stats["logs"]
            outcome = await monitor.poll_task(task_id)
            reads_per_poll.append(live.engine.stats["logs"] - before)
            _, _, cursors = await monitor._run(monitor.reports.load, task_id)
            ended = outcome is not None and outcome.status == "completed"
            if ended and all(c.drained for _, c in cursors.values()):
                break
            await asyncio.sleep(0.01)
        lines = await _assert_logs_complete(services, live, task_id)
    assert lines >= 2 * 150
    assert max(reads_per_poll) <= 2, reads_per_poll  # two agents, one answer each
    assert len(reads_per_poll) > lines // (2 * 20)  # at most a page of 20 lines per agent


async def test_a_poll_starts_from_what_other_processes_saved_after_its_last_poll(
    services: Services, app: Any
) -> None:
    """A worker keeps each task's state from one poll to the next; another worker's poll and
    a stop saved by another process in between are in its next plan, and its save holds."""
    async with live_engine(duration_min=30.0, duration_max=30.0, log_rate=20.0) as live, \
            monitor_for(services, live.url) as first, \
            monitor_for(services, live.url) as second:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await first.submit_task(task_id)
        await first.poll_task(task_id)  # `first` keeps the task's state from here
        await asyncio.sleep(0.2)
        assert (await second.poll_task(task_id)) is not None  # a poll by another worker
        await asyncio.to_thread(app.request_stop, task_id, "tester")  # another process

        plan = await services.run_sync(first.reports.plan_poll, task_id)
        assert plan is not None and plan.stop_pending
        kept, fresh = plan.loaded, await services.run_sync(first.reports.load, task_id)
        assert [a.version for a in (kept[0], *kept[1])] == [
            a.version for a in (fresh[0], *fresh[1])]  # fmt: skip
        assert kept[2] == fresh[2]  # the log cursors, and the versions of their streams

        await asyncio.sleep(0.2)
        outcome = await first.poll_task(task_id)
        assert outcome is not None and outcome.needs_stop


class _Crash(Exception):
    pass


class _CrashAtRestart:
    """The real Engine, except that the process dies at the restart of an agent: after the
    Engine restarted it (`reaches=True`) or before the request reached it; either way before
    anything after the call is saved. `then` runs just before the restart."""

    def __init__(self, inner: Any, then: Any, *, reaches: bool = True) -> None:
        self.inner, self.then, self.reaches = inner, then, reaches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def restart_agent(self, engine_agent_id: str) -> None:
        self.then()
        if self.reaches:
            await self.inner.restart_agent(engine_agent_id)
        raise _Crash


async def _crash_at_first_restart(
    services: Services, live: Any, task_id: int, then: Any, *, reaches: bool = True
) -> str:
    """Submit, poll until the worker dies at the first restart; the Engine's run id."""
    async with monitor_for(services, live.url) as monitor:
        await monitor.submit_task(task_id)
        monitor.engine = _CrashAtRestart(monitor.engine, then, reaches=reaches)  # type: ignore[assignment]
        with pytest.raises(_Crash):
            await run_to_end(monitor, task_id)
    task = services.app.get_task(task_id)
    execution = services.app.get_execution(task.execution_ids[0])
    assert (execution.status, execution.retry_count) == ("running", 1)
    assert execution.awaiting_restart and execution.restart_requested  # saved before the call
    return str(task.engine_task_id)


async def _history(services: Services, task_id: int) -> list[str]:
    await settled(services)
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT change_description FROM deduction_task_history"
            " WHERE deduction_task_id = %s AND change_type = 'agent_update' ORDER BY id",
            [task_id],
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_restart_the_engine_made_before_a_crash_is_taken_up_by_the_next_worker(
    services: Services,
) -> None:
    """The worker dies between the Engine restarting a failed agent and saving that it did;
    a fresh worker on the same database finds attempt 2 completed, takes it as the restart,
    does not restart again, and ends the task with both attempts' lines, each stored once."""
    async with live_engine(fail_rate=1.0) as live:
        new = new_task(params=[{"attack_strategy": "aggressive"}], max_retry=2)
        task_id = await services.run_sync(create_task, services.app, new)
        # attempt 2 succeeds: the knob is read when the Engine starts the attempt
        engine_task_id = await _crash_at_first_restart(
            services, live, task_id, lambda: live.engine.set_knobs({"fail_rate": 0.0})
        )
        assert live.engine.stats["restarts"] == 1

        async def attempt_two_ended() -> bool:
            agents = live.engine.sim.task_status(engine_task_id)["agents"]
            return bool(agents[0]["status"] == "completed")

        await wait_until(attempt_two_ended)
        async with monitor_for(services, live.url) as fresh:
            assert await run_to_end(fresh, task_id, polls=60) == "completed"
            assert live.engine.stats["restarts"] == 1  # not restarted a second time
            await _assert_logs_complete(services, live, task_id)
    execution = services.app.get_execution(services.app.get_task(task_id).execution_ids[0])
    assert (execution.status, execution.retry_count, execution.progress) == ("completed", 1, 100)
    history = await _history(services, task_id)
    assert sum("attempt 1 failed, retrying" in h for h in history) == 1
    assert sum("restart requested from the Engine (retry 1)" in h for h in history) == 1
    assert sum("restarted (retry 1)" in h for h in history) == 1


async def test_a_restart_requested_before_a_crash_that_never_reached_the_engine_is_sent_again(
    services: Services,
) -> None:
    """The worker saved "restart requested" and died before the request reached the Engine:
    the Engine still shows the failed attempt, so the next worker asks once, at once."""
    async with live_engine(fail_rate=1.0) as live:
        new = new_task(params=[{"attack_strategy": "aggressive"}], max_retry=2)
        task_id = await services.run_sync(create_task, services.app, new)
        await _crash_at_first_restart(
            services, live, task_id, lambda: live.engine.set_knobs({"fail_rate": 0.0}),
            reaches=False,
        )  # fmt: skip
        assert live.engine.stats["restarts"] == 0
        async with monitor_for(services, live.url) as fresh:
            assert await run_to_end(fresh, task_id, polls=60) == "completed"
            assert live.engine.stats["restarts"] == 1
            await _assert_logs_complete(services, live, task_id)
    execution = services.app.get_execution(services.app.get_task(task_id).execution_ids[0])
    assert (execution.status, execution.retry_count) == ("completed", 1)


async def test_an_engine_reporting_attempts_shows_the_restarted_attempt_failed_too(
    services: Services,
) -> None:
    """With the Engine's attempt number (an extra), a worker finding attempt 2 failed after a
    crash records the restart and attempt 2's failure, and restarts attempt 2 — not attempt 1
    a second time."""
    async with live_engine(fail_rate=1.0, extras=True) as live:
        new = new_task(params=[{"attack_strategy": "aggressive"}], max_retry=2)
        task_id = await services.run_sync(create_task, services.app, new)
        engine_task_id = await _crash_at_first_restart(services, live, task_id, lambda: None)

        async def attempt_two_failed() -> bool:
            agent = live.engine.sim.task_status(engine_task_id)["agents"][0]
            return bool((agent["status"], agent["attempt"]) == ("failed", 2))

        await wait_until(attempt_two_failed)
        live.engine.set_knobs({"fail_rate": 0.0})  # attempt 3 succeeds
        async with monitor_for(services, live.url) as fresh:
            assert await run_to_end(fresh, task_id, polls=80) == "completed"
            assert live.engine.stats["restarts"] == 2
            await _assert_logs_complete(services, live, task_id)
    execution = services.app.get_execution(services.app.get_task(task_id).execution_ids[0])
    assert (execution.status, execution.retry_count) == ("completed", 2)
    history = await _history(services, task_id)
    assert sum("attempt 2 failed, retrying" in h for h in history) == 1
    assert sum("restarted (retry 2)" in h for h in history) == 1
