"""HistoryController: the audit trail of a task (plan section 3.4)."""

from __future__ import annotations

from litestar import Controller, get

from deduction.adapters.http import views
from deduction.adapters.http.deps import ReadsDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import TaskId
from deduction.adapters.http.responses import HistoryResponse
from deduction.application.service import NotFoundError


class HistoryController(Controller):
    path = "/api/v1/deduction/task"
    tags = ("history",)

    @get(
        "/{task_id:str}/history",
        operation_id="getTaskHistory",
        responses=documented(404, 422, 503),
    )
    async def get_history(self, reads: ReadsDep, task_id: TaskId) -> HistoryResponse:
        """Every recorded change of the task and its agents, oldest first, with its operator."""
        rows = await reads.history.of_task(task_id)
        if rows is None:
            raise NotFoundError("task", task_id)
        return ok([views.from_row(views.HistoryEntry, r) for r in rows])
