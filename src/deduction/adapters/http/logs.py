"""LogController: log lines of one execution or of a whole task (plan section 3.3)."""

from __future__ import annotations

from litestar import Controller, get

from deduction.adapters.http import auth, views
from deduction.adapters.http.deps import ReadsDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import (
    AfterId,
    EndTime,
    ExecutionId,
    LogLimit,
    LogOrder,
    MinLevel,
    StartTime,
    TaskId,
    time_range,
)
from deduction.adapters.http.responses import LogPageResponse
from deduction.application.service import NotFoundError
from deduction.domain.logs import LEVELS
from deduction.projections.logs import LogFilter, LogView, Scope


def log_filter(
    level: str | None,
    limit: int,
    start_time: str | None,
    end_time: str | None,
    order: str,
    after_id: int | None,
) -> LogFilter:
    start, end = time_range(start_time, end_time)
    return LogFilter(
        min_level=LEVELS[level] if level else min(LEVELS.values()),
        start=start,
        end=end,
        after_id=after_id,
        limit=limit,
        newest_first=order == "desc",
    )


async def _page(logs: LogView, scope: Scope, ident: int, f: LogFilter) -> views.LogPage:
    found = await logs.page(scope, ident, f)
    if found is None:
        kind = "agent execution" if scope == "agent_execution_id" else "task"
        raise NotFoundError(kind, ident)
    lines = [views.from_row(views.LogLine, r) for r in found.rows]
    return views.LogPage(total=found.total, logs=lines, next_cursor=found.next_cursor)


class LogController(Controller):
    path = "/api/v1/deduction"
    tags = ("logs",)

    @get(
        "/agent-execution/{execution_id:str}/logs",
        operation_id="listExecutionLogs",
        opt=auth.READ,
        responses=documented(404, 422, 503),
    )
    async def execution_logs(
        self,
        reads: ReadsDep,
        execution_id: ExecutionId,
        level: MinLevel = None,
        limit: LogLimit = 100,
        start_time: StartTime = None,
        end_time: EndTime = None,
        order: LogOrder = "desc",
        after_id: AfterId = None,
    ) -> LogPageResponse:
        """One execution's log lines, newest first by default, paged by `after_id`."""
        f = log_filter(level, limit, start_time, end_time, order, after_id)
        return ok(await _page(reads.logs, "agent_execution_id", execution_id, f))

    @get(
        "/task/{task_id:str}/logs",
        operation_id="listTaskLogs",
        opt=auth.READ,
        responses=documented(404, 422, 503),
    )
    async def task_logs(
        self,
        reads: ReadsDep,
        task_id: TaskId,
        level: MinLevel = None,
        limit: LogLimit = 100,
        start_time: StartTime = None,
        end_time: EndTime = None,
        order: LogOrder = "desc",
        after_id: AfterId = None,
    ) -> LogPageResponse:
        """The log lines of all the task's executions, each with its agent_execution_id."""
        f = log_filter(level, limit, start_time, end_time, order, after_id)
        return ok(await _page(reads.logs, "deduction_task_id", task_id, f))
