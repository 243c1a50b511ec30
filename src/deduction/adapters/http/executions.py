"""AgentExecutionController: one execution, or the executions of a task (plan section 3.2)."""

from __future__ import annotations

from litestar import Controller, Response, get

from deduction.adapters.http import audit, auth, views
from deduction.adapters.http.deps import ReadsDep, ServicesDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import ExecutionId, StatusFilter, TaskId
from deduction.adapters.http.responses import AgentExecutionListResponse, AgentExecutionResponse
from deduction.application.service import NotFoundError
from deduction.application.services import Services


class AgentExecutionController(Controller):
    path = "/api/v1/deduction"
    tags = ("agent executions",)

    @get(
        "/agent-execution/{execution_id:str}",
        operation_id="getAgentExecution",
        opt=auth.READ_AS_OF,
        responses=documented(404, 422, 503),
        response_headers=audit.AS_OF_HEADERS,
    )
    async def get_execution(
        self,
        reads: ReadsDep,
        services: ServicesDep,
        execution_id: ExecutionId,
        as_of: audit.AsOf = None,
        as_of_position: audit.AsOfPosition = None,
    ) -> Response[AgentExecutionResponse]:
        """Status, progress, params, result and retries of one agent execution; with as_of
        or as_of_position, as it was then (rebuilt from the events)."""
        if as_of is not None or as_of_position is not None:
            return await _execution_as_of(services, execution_id, as_of, as_of_position)
        row = await reads.agents.execution(execution_id)
        if row is None:
            raise NotFoundError("agent execution", execution_id)
        return Response(ok(views.from_row(views.AgentExecution, row)))

    @get(
        "/task/{task_id:str}/agents",
        operation_id="listTaskAgents",
        opt=auth.READ_AS_OF,
        responses=documented(404, 422, 503),
        response_headers=audit.AS_OF_HEADERS,
    )
    async def list_task_agents(
        self,
        reads: ReadsDep,
        services: ServicesDep,
        task_id: TaskId,
        status: StatusFilter = None,
        as_of: audit.AsOf = None,
        as_of_position: audit.AsOfPosition = None,
    ) -> Response[AgentExecutionListResponse]:
        """The task's agent executions in config order, optionally only those with `status`;
        with as_of or as_of_position, as they were then."""
        if as_of is not None or as_of_position is not None:
            _, state = await audit.task_state(services, task_id, as_of, as_of_position)
            rows = [r for r in state.agents if status is None or r["status"] == status]
            items = [views.from_row(views.AgentExecution, r) for r in rows]
            return audit.as_of_response(items, state.position)
        found = await reads.agents.of_task(task_id, status)
        if found is None:
            raise NotFoundError("task", task_id)
        return Response(ok([views.from_row(views.AgentExecution, r) for r in found]))


async def _execution_as_of(
    services: Services, execution_id: int, as_of: str | None, as_of_position: int | None
) -> Response[AgentExecutionResponse]:
    log = audit.event_log(services)
    task_id = await log.execution_task(execution_id)
    if task_id is None:
        raise NotFoundError("agent execution", execution_id)
    _, state = await audit.task_state(services, task_id, as_of, as_of_position)
    row = next((r for r in state.agents if r["id"] == execution_id), None)
    if row is None:
        raise NotFoundError("agent execution", execution_id)
    return audit.as_of_response(views.from_row(views.AgentExecution, row), state.position)
