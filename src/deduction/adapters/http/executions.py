"""AgentExecutionController: one execution, or the executions of a task (plan section 3.2)."""

from __future__ import annotations

from litestar import Controller, get

from deduction.adapters.http import views
from deduction.adapters.http.deps import ReadsDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import ExecutionId, StatusFilter, TaskId
from deduction.adapters.http.responses import AgentExecutionListResponse, AgentExecutionResponse
from deduction.application.service import NotFoundError


class AgentExecutionController(Controller):
    path = "/api/v1/deduction"
    tags = ("agent executions",)

    @get(
        "/agent-execution/{execution_id:str}",
        operation_id="getAgentExecution",
        responses=documented(404, 422, 503),
    )
    async def get_execution(
        self, reads: ReadsDep, execution_id: ExecutionId
    ) -> AgentExecutionResponse:
        """Status, progress, params, result and retries of one agent execution."""
        row = await reads.agents.execution(execution_id)
        if row is None:
            raise NotFoundError("agent execution", execution_id)
        return ok(views.from_row(views.AgentExecution, row))

    @get(
        "/task/{task_id:str}/agents",
        operation_id="listTaskAgents",
        responses=documented(404, 422, 503),
    )
    async def list_task_agents(
        self, reads: ReadsDep, task_id: TaskId, status: StatusFilter = None
    ) -> AgentExecutionListResponse:
        """The task's agent executions in config order, optionally only those with `status`."""
        rows = await reads.agents.of_task(task_id, status)
        if rows is None:
            raise NotFoundError("task", task_id)
        return ok([views.from_row(views.AgentExecution, r) for r in rows])
