"""TaskMonitor: talks to the Engine about one task and hands what it learnt to the reports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import structlog

from deduction.application.findings import (
    ExecutionPlan,
    LogRead,
    Outcome,
    PollPlan,
    PollReport,
    SubmitPlan,
    match_agents,
)
from deduction.application.log_cursor import Cursor, ingest
from deduction.application.ports import (
    Engine,
    EngineError,
    EngineRejectedError,
    EngineRunNotFoundError,
    EngineUnavailableError,
    RestartUnsupportedError,
)
from deduction.application.reports import EngineReports
from deduction.domain.execution import engine_past_failure
from deduction.domain.times import iso_utc, utc_now

log = structlog.get_logger(__name__)
T = TypeVar("T")
MAX_LOG_CALLS = 16  # reads of one agent's logs per poll; the next poll carries on


class RunSync(Protocol):
    """Runs a synchronous application call off the event loop (the command thread pool)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class TaskMonitor:
    """Submit, poll, update and stop tasks on the Engine; every finding goes through `reports`."""

    def __init__(
        self,
        reports: EngineReports,
        engine: Engine,
        run_sync: RunSync,
        *,
        restart_backoff: float = 1.0,
        restart_backoff_cap: float = 60.0,
        log_concurrency: int = 32,
    ) -> None:
        self.reports, self.engine, self._run = reports, engine, run_sync
        self._backoff, self._backoff_cap = restart_backoff, restart_backoff_cap
        self._log_slots = asyncio.Semaphore(log_concurrency)

    # -- submit ------------------------------------------------------------------------------

    async def submit_task(self, task_id: int, plan: SubmitPlan | None = None) -> Outcome | None:
        """Submit a pending task; "submission requested" is saved before the Engine is called
        (by the admission, which passes its `plan`, or here)."""
        if plan is None and self.engine.circuit_open():
            since = _since(self.engine)
            error = EngineUnavailableError("the Engine is failing: circuit open", since)
            return await self._run(self.reports.record_submission_failed, task_id, error)
        if plan is None:
            plan = await self._run(self.reports.request_submission, task_id)
        if plan is None:
            return None
        try:
            engine_task_id = await self.engine.submit(plan.payload, str(task_id))
        except EngineError as e:
            log.warning("task.submit_failed", task_id=task_id, error=str(e))
            return await self._run(self.reports.record_submission_failed, task_id, e)
        outcome: Outcome = await self._run(self.reports.record_submitted, plan, engine_task_id)
        log.info("task.submitted", task_id=task_id, engine_task_id=engine_task_id)
        return outcome

    # -- poll --------------------------------------------------------------------------------

    async def poll_task(self, task_id: int) -> Outcome | None:
        """Status, restarts and logs of one task, then one save() of everything learnt."""
        plan: PollPlan | None = await self._run(self.reports.plan_poll, task_id)
        if plan is None:
            return None
        report = PollReport(task_id, plan)
        engine_ids = {ex.execution_id: ex.engine_agent_id for ex in plan.executions}
        unpaired = any(v is None and not ex.drained
                       for ex, v in zip(plan.executions, engine_ids.values()))  # fmt: skip
        if not plan.ended or (unpaired and not plan.stop_pending):
            try:
                status = await self.engine.task_status(plan.engine_task_id)
                matched = match_agents(list(engine_ids), status.agents, engine_ids)
            except EngineError as e:
                report.error = e
                log.warning("task.poll_failed", task_id=task_id, error=str(e))
                return await self._run(self.reports.record_poll, report)
            report.status = status
            engine_ids = {eid: str(agent.engine_agent_id) for eid, agent in matched.items()}
            if not plan.ended:
                await self._restart_due(plan, matched, report)
        report.restart_supported = self.engine.restart_supported
        report.logs = await self._fetch_logs(plan, engine_ids, report, [self.reports.max_log_bytes])
        outcome: Outcome = await self._run(self.reports.record_poll, report)
        log.debug("task.polled", task_id=task_id, status=outcome.status, lines=outcome.lines)
        if not plan.ended and outcome.status in ("completed", "failed", "stopped"):
            log.info("task.ended", task_id=task_id, status=outcome.status)
        return outcome

    async def _restart_due(
        self, plan: PollPlan, matched: dict[int, Any], report: PollReport
    ) -> None:
        """Restart each failed agent whose backoff has passed. "Restart requested" is saved
        before the Engine is called; a request found saved (its worker died) is sent again
        only while the Engine still shows the failed attempt, never once it is past it."""
        now = utc_now()
        for ex in plan.executions:
            agent = matched[ex.execution_id]
            if not ex.awaiting_restart or ex.ended:
                continue
            if engine_past_failure(agent.status, agent.attempt, ex.retry_count):
                report.resumed.add(ex.execution_id)  # restarted by a request not saved as done
                log.info("agent.restart_found", execution_id=ex.execution_id,
                         status=agent.status, attempt=agent.attempt)  # fmt: skip
                continue
            if ex.failed_at is None:
                continue
            wait = min(self._backoff_cap, self._backoff * 2 ** max(0, ex.retry_count - 1))
            if not ex.restart_requested and (now - ex.failed_at).total_seconds() < wait:
                continue
            request = self.reports.request_restart
            if not await self._run(request, ex.execution_id, ex.retry_count, ex.restart_requested):
                continue  # another poll moved the agent or asked for this restart meanwhile
            try:
                await self.engine.restart_agent(agent.engine_agent_id)
            except RestartUnsupportedError:
                report.cannot_restart[ex.execution_id] = "the Engine cannot restart agents"
            except EngineRejectedError as e:
                if ex.restart_requested and e.status == 409:
                    # not failed any more: the saved request got through; the next status shows it
                    log.info("agent.restart_conflict", execution_id=ex.execution_id, error=str(e))
                    continue
                report.cannot_restart[ex.execution_id] = str(e)
            except EngineError as e:
                log.warning("agent.restart_failed", execution_id=ex.execution_id, error=str(e))
            else:
                report.restarted.add(ex.execution_id)
                log.info("agent.restarted", execution_id=ex.execution_id, attempt=ex.retry_count)

    async def _fetch_logs(
        self,
        plan: PollPlan,
        engine_ids: dict[int, str | None],
        report: PollReport,
        bytes_left: list[int],
    ) -> dict[int, LogRead]:
        """Logs of every paired agent not drained yet; a failed read is retried next poll.
        `bytes_left` (shared by the agents' reads) bounds the bytes of Engine answers one poll
        reads: once spent, no agent asks again, and the next poll carries on from the cursors."""
        wanted = [ex for ex in plan.executions if engine_ids[ex.execution_id] and not ex.drained]
        results = await asyncio.gather(
            *(self._logs_of(ex, str(engine_ids[ex.execution_id]), report, bytes_left)
              for ex in wanted)
        )  # fmt: skip
        return {ex.execution_id: got for ex, got in zip(wanted, results) if got is not None}

    async def _logs_of(
        self, ex: ExecutionPlan, engine_agent_id: str, report: PollReport, bytes_left: list[int]
    ) -> LogRead | None:
        """Read while reads bring something new, within a budget of calls and lines."""
        cursor = ex.cursor if ex.engine_agent_id == engine_agent_id else Cursor()
        got = LogRead(ex.log_version, cursor)
        budget = self.reports.max_lines
        restarted = (ex.execution_id in report.restarted or ex.execution_id in report.resumed
                     or not ex.awaiting_restart)  # fmt: skip
        attempt = 2 * ex.retry_count + restarted  # moves at each failure and each restart
        async with self._log_slots:
            for _ in range(MAX_LOG_CALLS):
                if bytes_left[0] <= 0:
                    log.debug("agent.logs_deferred", execution_id=ex.execution_id,
                              reason="the poll's log byte budget is spent")  # fmt: skip
                    break
                since = got.cursor.since()
                try:
                    page = await self.engine.agent_logs(engine_agent_id, since, budget)
                except EngineRunNotFoundError as e:
                    report.run_missing = e  # the Engine has lost the run (or this agent of it)
                    log.warning(
                        "agent.logs_run_missing", execution_id=ex.execution_id, error=str(e)
                    )
                    break
                except EngineError as e:
                    log.warning("agent.logs_failed", execution_id=ex.execution_id, error=str(e))
                    break
                bytes_left[0] -= page.size
                step = ingest(got.cursor, page, budget - len(got.lines), since, ex.ended, attempt)
                got.cursor, got.complete = step.cursor, step.complete
                got.lines += step.lines
                got.skipped += step.skipped
                got.gaps += [step.gap] if step.gap else []
                if not step.progressed or len(got.lines) >= budget:
                    break
        if got.cursor == cursor and not got.complete:
            return None
        return got

    # -- update and stop ---------------------------------------------------------------------

    async def send_update(self, task_id: int) -> Outcome | None:
        """Deliver pending updates; loops so an update recorded meanwhile is not left behind."""
        outcome = None
        for _ in range(3):
            plan = await self._run(self.reports.plan_update, task_id)
            if plan is None:
                break
            try:
                await self.engine.update(plan.engine_task_id, plan.payload)
            except EngineRejectedError as e:  # resending the same update cannot help
                log.warning("task.update_rejected", task_id=task_id, error=str(e))
                rejected = self.reports.record_update_rejected
                return await self._run(rejected, task_id, plan.update_ids, e.detail)
            except EngineError as e:
                log.warning("task.update_failed", task_id=task_id, error=str(e))
                break
            delivered = self.reports.record_update_delivered
            outcome = await self._run(delivered, task_id, plan.update_ids)
            log.info("task.update_delivered", task_id=task_id, updates=plan.update_ids)
        return outcome

    async def send_stop(self, task_id: int) -> Outcome | None:
        """Tell the Engine to stop; then read the agents' logs once more."""
        engine_task_id = await self._run(self.reports.plan_stop, task_id)
        if engine_task_id is None:
            return None
        try:
            await self.engine.stop(engine_task_id)
        except EngineRejectedError as e:  # it knows no such run, or it has ended: nothing to stop
            log.warning("task.stop_rejected", task_id=task_id, error=str(e))
        except EngineError as e:
            log.warning("task.stop_failed", task_id=task_id, error=str(e))
            return None
        outcome: Outcome = await self._run(self.reports.record_stop_delivered, task_id)
        log.info("task.stop_delivered", task_id=task_id)
        await self.poll_task(task_id)
        return outcome


def _since(engine: Engine) -> str:
    return engine.failing_since() or iso_utc(utc_now())
