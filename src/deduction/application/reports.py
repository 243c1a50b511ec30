"""EngineReports: what the Engine said about a task, as events — one save() per poll."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from deduction.application.findings import (
    ExecutionPlan,
    LogRead,
    Outcome,
    PollPlan,
    PollReport,
    SubmitPlan,
    UpdatePlan,
    match_agents,
)
from deduction.application.group_save import GroupSave
from deduction.application.log_cursor import Cursor, batches
from deduction.application.ports import (
    EngineAgent,
    EngineError,
    EngineRejectedError,
    EngineRunNotFoundError,
    EngineUnavailableError,
    EventStreams,
    StreamHead,
)
from deduction.application.service import DeductionApp, NotFoundError, retry_on_conflict
from deduction.domain import AgentExecution, DeductionTask, ExecutionLog
from deduction.domain.ids import to_uuid
from deduction.domain.logs import log_stream_id
from deduction.domain.times import iso_utc, utc_now

log = structlog.get_logger(__name__)
T = TypeVar("T")
_KNOWN_TASKS = 100_000  # execution ids remembered per task (they never change)
_KEPT_STATES = 5_000  # tasks whose state after their last poll is kept for the next one
Loaded = tuple[DeductionTask, list[AgentExecution], dict[int, tuple[int, Cursor]]]


def _weight(events: list[Any]) -> int:
    """What an event costs to save: one, plus its log lines."""
    return sum(1 + len(getattr(e, "lines", ())) for e in events)


def _found(aggregates: dict[UUID, Any], ident: int, kind: type[T], what: str) -> T:
    aggregate = aggregates.get(to_uuid(ident))
    if not isinstance(aggregate, kind):
        raise NotFoundError(what, ident)
    return aggregate


class RepositoryStreams:
    """EventStreams through the library's public API: one read per aggregate and stream (for
    stores without a bulk reader)."""

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app

    def load(
        self, aggregate_ids: Sequence[UUID], newest_of: Sequence[UUID]
    ) -> tuple[dict[UUID, Any], dict[UUID, StreamHead]]:
        aggregates: dict[UUID, Any] = {}
        for aggregate_id in aggregate_ids:
            with contextlib.suppress(AggregateNotFoundError):
                aggregates[aggregate_id] = self.app.repository.get(aggregate_id)
        heads: dict[UUID, StreamHead] = {}
        for stream_id in newest_of:
            stored = self.app.recorder.select_events(stream_id, desc=True, limit=1)
            if stored:
                cursor = getattr(self.app.mapper.to_domain_event(stored[0]), "cursor", None)
                heads[stream_id] = StreamHead(stored[0].originator_version, cursor)
        return aggregates, heads

    def read_after(
        self, versions: Mapping[UUID, int], heads_after: Mapping[UUID, int]
    ) -> tuple[dict[UUID, list[Any]], dict[UUID, StreamHead]]:
        events: dict[UUID, list[Any]] = {}
        for aggregate_id, version in versions.items():
            later = list(self.app.events.get(aggregate_id, gt=version))
            if later:
                events[aggregate_id] = later
        _, heads = self.load([], list(heads_after))
        return events, {k: h for k, h in heads.items() if h.version > heads_after[k]}


class EngineReports:
    """The service layer for Engine reports: load aggregates, apply, save once; on a
    concurrency conflict, reload and apply again."""

    def __init__(
        self,
        app: DeductionApp,
        engine_url: str,
        unreachable_deadline: float,
        log_batch_size: int,
        max_lines_per_poll: int = 20_000,
        *,
        max_log_bytes_per_poll: int = 16 * 1024 * 1024,
        streams: EventStreams | None = None,
        run_missing_grace: float = 60.0,
    ) -> None:
        self.app, self.engine_url = app, engine_url
        self.deadline, self.batch_size = unreachable_deadline, log_batch_size
        self.max_lines = max_lines_per_poll  # per agent
        self.max_log_bytes = max_log_bytes_per_poll  # Engine log answers, all agents together
        self.missing_grace = run_missing_grace
        self.streams: EventStreams = streams or RepositoryStreams(app)
        self._execution_ids: dict[int, list[int]] = {}
        # Each task's aggregates and log cursors as this process's last poll saved them: the
        # next poll reads only what was saved after them (usually nothing) instead of every
        # event of every execution. A poll takes its task's entry out while it runs, so no
        # two polls share an aggregate, and puts it back only once its save succeeded.
        self._kept: OrderedDict[int, Loaded] = OrderedDict()
        self._kept_lock = threading.Lock()
        # A shared transaction carries about as much as one busy poll did on its own.
        self._group_save = GroupSave(app.save, weigh=_weight, max_weight=5000)

    # -- helpers -----------------------------------------------------------------------------

    def _save(self, *objs: Any) -> int:
        """Save atomically, sharing the transaction with saves from other polls that arrive
        at the same time; nothing new means no transaction at all."""
        events: list[Any] = []
        for obj in objs:
            if isinstance(obj, Aggregate):
                events += obj.collect_events()
            else:
                events.append(obj)
        return self._group_save(events)

    def cursor(self, execution_id: int) -> tuple[int, Cursor]:
        """The log stream's version and the cursor in its newest event (the only one read)."""
        stream = log_stream_id(execution_id)
        head = self.streams.load([], [stream])[1].get(stream)
        return (0, Cursor()) if head is None else (head.version, Cursor.from_dict(head.cursor))

    def load(self, task_id: int) -> Loaded:
        """A task, its executions and their log cursors: one read of the event store once the
        task is known (its execution ids never change)."""
        ids = self._execution_ids.get(task_id)
        task: DeductionTask | None = None
        if ids is None:
            task = self.app.get_task(task_id)
            ids = task.execution_ids
            if len(self._execution_ids) >= _KNOWN_TASKS:
                self._execution_ids.clear()
            self._execution_ids[task_id] = ids
        aggregate_ids = ([] if task else [to_uuid(task_id)]) + [to_uuid(e) for e in ids]
        streams = [log_stream_id(e) for e in ids]
        aggregates, heads = self.streams.load(aggregate_ids, streams)
        if task is None:
            task = _found(aggregates, task_id, DeductionTask, "task")
        executions = [_found(aggregates, e, AgentExecution, "agent execution") for e in ids]
        cursors = {}
        for e, stream in zip(ids, streams):
            head = heads.get(stream)
            cursors[e] = (0, Cursor()) if head is None else (
                head.version, Cursor.from_dict(head.cursor))  # fmt: skip
        return task, executions, cursors

    def _take(self, task_id: int) -> Loaded:
        """The task as the last poll left it, brought up to date by one read of what was
        saved since (other processes' commands and polls); a full load if none is kept."""
        with self._kept_lock:
            kept = self._kept.pop(task_id, None)
        if kept is None:
            return self.load(task_id)
        task, executions, cursors = kept
        by_id: dict[UUID, Any] = {task.id: task, **{ex.id: ex for ex in executions}}
        streams = {log_stream_id(e): e for e in cursors}
        later, heads = self.streams.read_after(
            {oid: agg.version for oid, agg in by_id.items()},
            {stream: cursors[e][0] for stream, e in streams.items()},
        )
        for oid, events in later.items():
            for event in events:
                event.mutate(by_id[oid])
        for stream, head in heads.items():
            cursors[streams[stream]] = (head.version, Cursor.from_dict(head.cursor))
        return task, executions, cursors

    def _keep(self, task_id: int, loaded: Loaded) -> None:
        with self._kept_lock:
            self._kept[task_id] = loaded
            self._kept.move_to_end(task_id)
            while len(self._kept) > _KEPT_STATES:
                self._kept.popitem(last=False)

    @staticmethod
    def _outcome(position: int, task: DeductionTask, lines: int = 0, gaps: int = 0) -> Outcome:
        return Outcome(position, task.status, task.needs_engine_stop,
                       bool(task.pending_updates) and not task.is_ended, lines, gaps)  # fmt: skip

    def _fail(self, task: DeductionTask, executions: list[AgentExecution], reason: str) -> None:
        for ex in executions:
            if not ex.is_ended:
                ex.change_status("failed", "system", error=reason[:2000])
        task.fail_abandoned(reason[:2000])

    def _engine_failed(
        self, task: DeductionTask, executions: list[AgentExecution], error: EngineError
    ) -> None:
        """Note the Engine as unreachable once; fail the task once the deadline has passed."""
        since = error.since if isinstance(error, EngineUnavailableError) else iso_utc(utc_now())
        task.record_engine_unreachable(since, str(error))
        started = datetime.fromisoformat(task.unreachable_since or since)
        if (utc_now() - started).total_seconds() >= self.deadline:
            self._fail(task, executions, f"the Engine has been unreachable since"
                       f" {task.unreachable_since}: {error}")  # fmt: skip

    def _run_missing(
        self, task: DeductionTask, executions: list[AgentExecution], error: EngineError
    ) -> None:
        """Note once that the Engine does not know the run; fail the task once the grace has
        passed (an Engine that lost a run in a restart will not find it again)."""
        message = f"the Engine does not know run {task.engine_task_id}: {error}"
        task.record_run_missing(iso_utc(utc_now()), message)
        since = datetime.fromisoformat(task.run_missing_since or iso_utc(utc_now()))
        if (utc_now() - since).total_seconds() >= self.missing_grace:
            self._fail(task, executions, f"{message} (since {task.run_missing_since})")

    # -- submission --------------------------------------------------------------------------

    def request_submission(self, task_id: int) -> SubmitPlan | None:
        """Record "submission requested" (before the call, for crash recovery); the payload."""

        def command() -> SubmitPlan | None:
            task = self.app.get_task(task_id)
            if task.status != "pending" or task.engine_task_id or task.stop_requested:
                return None
            executions = self.app.executions_of(task)
            included = sorted(task.pending_updates)  # their params are in the payload
            task.request_submission("system")
            position = self._save(task)
            payload = {
                "name": task.name,
                "scheme": task.scheme_snapshot,
                "env": task.env_snapshot,
                "agents": [
                    {"agent_name": ex.agent_name, "agent_load": ex.agent_load, "side": ex.side,
                     "params": ex.params, "ref": ex.execution_id}
                    for ex in executions
                ],
            }  # fmt: skip
            return SubmitPlan(task_id, payload, included, position)

        return retry_on_conflict(command)

    def record_submitted(self, plan: SubmitPlan, engine_task_id: str) -> Outcome:
        def command() -> Outcome:
            task = self.app.get_task(plan.task_id)
            task.record_submitted(engine_task_id, self.engine_url)
            task.record_engine_reachable()
            for update_id in plan.included_updates:
                task.record_update_delivered(update_id)
            return self._outcome(self._save(task), task)

        return retry_on_conflict(command)

    def record_submission_failed(self, task_id: int, error: EngineError) -> Outcome:
        """Rejected (4xx): the task fails with the Engine's message. Otherwise: unreachable."""

        def command() -> Outcome:
            task = self.app.get_task(task_id)
            executions = self.app.executions_of(task)
            if task.status == "pending" and task.engine_task_id is None:
                if isinstance(error, EngineRejectedError):
                    self._fail(task, executions,
                               f"the Engine rejected the submission: {error.detail}")  # fmt: skip
                else:
                    self._engine_failed(task, executions, error)
            return self._outcome(self._save(task, *executions), task)

        return retry_on_conflict(command)

    # -- updates and stops -------------------------------------------------------------------

    def plan_update(self, task_id: int) -> UpdatePlan | None:
        """The Engine update for every pending update: the agents' current (merged) params."""
        task = self.app.get_task(task_id)
        if task.is_ended or not task.pending_updates or task.engine_task_id is None:
            return None
        ids = list(dict.fromkeys(
            c["execution_id"] for changes in task.pending_updates.values() for c in changes
        ))  # fmt: skip
        executions = [self.app.get_execution(eid) for eid in ids]
        if any(ex.engine_agent_id is None for ex in executions):
            return None  # the first poll has not paired the agents yet
        agents = [{"engine_agent_id": ex.engine_agent_id, "params": ex.params} for ex in executions]
        return UpdatePlan(task.engine_task_id, {"agents": agents}, sorted(task.pending_updates))

    def record_update_rejected(self, task_id: int, update_ids: list[int], error: str) -> Outcome:
        def command() -> Outcome:
            task = self.app.get_task(task_id)
            for update_id in update_ids:
                task.record_update_rejected(update_id, error)
            return self._outcome(self._save(task), task)

        return retry_on_conflict(command)

    def record_update_delivered(self, task_id: int, update_ids: list[int]) -> Outcome:
        def command() -> Outcome:
            task = self.app.get_task(task_id)
            for update_id in update_ids:
                task.record_update_delivered(update_id)
            return self._outcome(self._save(task), task)

        return retry_on_conflict(command)

    def plan_stop(self, task_id: int) -> str | None:
        task = self.app.get_task(task_id)
        return task.engine_task_id if task.needs_engine_stop else None

    def record_stop_delivered(self, task_id: int) -> Outcome:
        def command() -> Outcome:
            task = self.app.get_task(task_id)
            task.record_stop_delivered()
            return self._outcome(self._save(task), task)

        return retry_on_conflict(command)

    # -- polls -------------------------------------------------------------------------------

    def request_restart(self, execution_id: int, attempt: int, requested: bool) -> bool:
        """Record that the Engine is about to be asked to restart the failed `attempt` (saved
        before the call, like a submission). False when the agent is not as the poll planned
        (`requested`: whether a request was saved already): another poll moved it or asked
        for this restart meanwhile, and the Engine must not be asked twice."""

        def command() -> bool:
            ex = self.app.get_execution(execution_id)
            if ex.is_ended or not ex.awaiting_restart or ex.retry_count != attempt:
                return False
            if ex.restart_requested != requested:
                return False
            ex.record_restart_requested()
            self._save(ex)
            return True

        return retry_on_conflict(command)

    def plan_poll(self, task_id: int) -> PollPlan | None:
        task, executions, cursors = self._take(task_id)
        if task.engine_task_id is None:
            return None
        plans = []
        for ex in executions:
            cursor = cursors[ex.execution_id][1]
            plans.append(ExecutionPlan(
                ex.execution_id, ex.engine_agent_id, ex.is_ended, ex.awaiting_restart,
                ex.retry_count, ex.modified_on if ex.awaiting_restart else None,
                cursor.since(), cursor.drained, cursor, cursors[ex.execution_id][0],
                ex.restart_requested,
            ))  # fmt: skip
        return PollPlan(task_id, task.engine_task_id, task.is_ended, task.needs_engine_stop, plans,
                        loaded=(task, executions, cursors))  # fmt: skip

    def record_poll(self, report: PollReport) -> Outcome:
        loaded = [report.plan.loaded] if report.plan is not None else []
        return retry_on_conflict(
            lambda: self._record_poll(report, loaded.pop() if loaded else None)
        )

    def _record_poll(self, report: PollReport, loaded: Any) -> Outcome:
        task, executions, cursors = loaded if loaded is not None else self.load(report.task_id)
        missing: EngineError | None = report.run_missing
        if isinstance(report.error, EngineRunNotFoundError):
            missing = report.error
        if missing is not None and not task.is_ended:
            self._run_missing(task, executions, missing)
        elif missing is None and report.error is not None and not task.is_ended:
            self._engine_failed(task, executions, report.error)
        if report.status is not None:
            if missing is None:
                task.record_engine_reachable()
            paired = {ex.execution_id: ex.engine_agent_id for ex in executions}
            matched = match_agents(list(paired), report.status.agents, paired)
            for ex in executions:
                ex.assign_engine_agent(str(matched[ex.execution_id].engine_agent_id))
            if not task.is_ended:
                self._apply_status(task, executions, matched, report)
        events: list[ExecutionLog.LogsReceived] = []
        heads: dict[int, tuple[int, Cursor]] = {}
        by_id = {ex.execution_id: ex for ex in executions}
        for execution_id, read in report.logs.items():
            ex = by_id[execution_id]
            drained = ex.is_ended and not task.needs_engine_stop and read.complete
            stream = cursors.get(execution_id) or self.cursor(execution_id)
            batch = self._log_events(ex, stream, read, drained)
            if batch:
                heads[execution_id] = (batch[-1].originator_version,
                                       Cursor.from_dict(batch[-1].cursor))  # fmt: skip
            events += batch
        gaps = sum(isinstance(e, AgentExecution.LogGapRecorded)
                   for ex in executions for e in ex.pending_events)  # fmt: skip
        position = self._save(task, *executions, *events)
        if set(cursors) == set(by_id):
            self._keep(task.task_id, (task, executions, {**cursors, **heads}))
        return self._outcome(position, task, sum(len(e.lines) for e in events), gaps)

    @staticmethod
    def _apply_status(task: DeductionTask, executions: list[AgentExecution],
                      matched: dict[int, EngineAgent], report: PollReport) -> None:  # fmt: skip
        """Each agent's report, then the Engine's word on the whole task, then settle."""
        for ex in executions:
            agent, eid = matched[ex.execution_id], ex.execution_id
            ex.apply_engine_report(
                agent.status, int(agent.progress or 0), agent.result, agent.error,
                restarted=eid in report.restarted,
                cannot_restart_reason=report.cannot_restart.get(eid),
                restart_supported=report.restart_supported,
                attempt=agent.attempt,
            )  # fmt: skip
        engine_status = report.status.status if report.status else "running"
        for ex in executions:
            ex.record_engine_task_ended(
                engine_status, restarted=ex.execution_id in report.restarted
            )
        task.settle(executions)

    def _log_events(
        self, ex: AgentExecution, stream: tuple[int, Cursor], read: LogRead, drained: bool
    ) -> list[ExecutionLog.LogsReceived]:
        """The read's lines in batches, each carrying the cursor reached (they are saved
        together); lines that could not be read and gaps go on the execution, visibly."""
        version, cursor = stream
        if cursor.drained or version != read.version:
            return []  # drained already, or another poll stored logs meanwhile: read again
        if read.skipped:
            ex.record_log_lines_skipped(read.skipped)
            log.warning("logs.lines_skipped", execution_id=ex.execution_id, lines=read.skipped)
        for gap in read.gaps:
            ex.record_log_gap(gap.describe(), gap.start, gap.end, gap.lines)
            log.warning(
                "logs.gap", execution_id=ex.execution_id, start=gap.start, end=gap.end,
                lines=gap.lines,
            )  # fmt: skip
        final = replace(read.cursor, drained=drained)
        if not read.lines and final == cursor:
            return []
        chunks = batches(read.lines, self.batch_size) or [[]]
        state = final.to_dict()
        return [
            ExecutionLog.batch(version + 1 + i, ex.execution_id, ex.task_id, chunk, state)
            for i, chunk in enumerate(chunks)
        ]
