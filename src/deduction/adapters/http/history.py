"""HistoryController: the audit trail of a task (plan section 3.4), paged and filtered."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, get
from litestar.params import QueryParameter

from deduction.adapters.http import audit, auth, views
from deduction.adapters.http.deps import ReadsDep, ServicesDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import FROM_ZERO, EndTime, StartTime, TaskId, time_range
from deduction.adapters.http.responses import HistoryResponse
from deduction.application.service import NotFoundError
from deduction.domain.ids import MAX_ID
from deduction.projections.as_of import history_as_of
from deduction.projections.history import HistoryFilter

ChangeType = Annotated[
    Literal["status_change", "config_update", "agent_update", "submission", "stop_request",
            "engine_connectivity", "priority_change"] | None,
    QueryParameter(description="only changes of this type"),
]  # fmt: skip
After = Annotated[
    int,
    QueryParameter(
        ge=0, le=MAX_ID, description="cursor: entries after this position", schema_extra=FROM_ZERO
    ),
]
Limit = Annotated[
    int | None,
    QueryParameter(ge=1, le=1000, description="at most this many entries (default: all)"),
]
OperatorFilter = Annotated[
    str | None,
    QueryParameter(min_length=1, max_length=64, description="only changes by this operator"),
]


class HistoryController(Controller):
    path = "/api/v1/deduction/task"
    tags = ("history",)

    @get(
        "/{task_id:str}/history",
        operation_id="getTaskHistory",
        opt=auth.READ_AS_OF,
        responses=documented(404, 422, 503),
        response_headers=audit.AS_OF_HEADERS,
    )
    async def get_history(
        self,
        reads: ReadsDep,
        services: ServicesDep,
        task_id: TaskId,
        after: After = 0,
        limit: Limit = None,
        change_type: ChangeType = None,
        operator: OperatorFilter = None,
        start_time: StartTime = None,
        end_time: EndTime = None,
        as_of: audit.AsOf = None,
        as_of_position: audit.AsOfPosition = None,
    ) -> Response[HistoryResponse]:
        """Every recorded change of the task and its agents, oldest first, with its operator
        and the position of the event it came from. Page with `after` = the last entry's
        position; filter by change type, operator and change_time in [start_time, end_time).
        With as_of or as_of_position: the history as it stood then, from the events."""
        start, end = time_range(start_time, end_time)
        which = HistoryFilter(
            after=after, limit=limit, change_type=change_type, operator=operator,
            start=start, end=end,
        )  # fmt: skip
        if as_of is not None or as_of_position is not None:
            streams, state = await audit.task_state(services, task_id, as_of, as_of_position)
            history = await history_as_of(audit.event_log(services), streams, state.position)
            rows = [r for r in history if which.keeps(r)][: limit or None]
            entries = [views.from_row(views.HistoryEntry, r) for r in rows]
            return audit.as_of_response(entries, state.position)
        found = await reads.history.of_task(task_id, which)
        if found is None:
            raise NotFoundError("task", task_id)
        return Response(ok([views.from_row(views.HistoryEntry, r) for r in found]))
