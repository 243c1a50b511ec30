"""TaskController: create, read, list, stop and update tasks (plan section 3.1)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get, post, put
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import Example
from litestar.params import BodyKwarg

from deduction.adapters.http import audit, auth, views
from deduction.adapters.http.bodies import strict_body
from deduction.adapters.http.deps import ActorDep, ReadsDep, ReadViews, ServicesDep, dispatch
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import (
    MAX_TASK_PAGE,
    IdempotencyKeyHeader,
    PageSize,
    StatusFilter,
    TaskAfterId,
    TaskId,
    TaskPageNo,
)
from deduction.adapters.http.responses import (
    TaskCreatedResponse,
    TaskDetailResponse,
    TaskPageResponse,
    TaskPriorityResponse,
    TaskStoppedResponse,
    TaskUpdatedResponse,
)
from deduction.adapters.http.schemas import (
    InputError,
    TaskCreate,
    TaskPriorityChange,
    TaskUpdate,
    check_task_create,
    check_task_update,
)
from deduction.application import service as commands
from deduction.domain.ids import MAX_ID
from deduction.domain.task import DEFAULT_PRIORITY
from deduction.domain.times import rfc3339

PLAN_TASK = {
    "name": "task_20251112_001",
    "description": "红蓝对抗演练任务",
    "scheme_id": 1234567890,
    "env_instance_id": 9876543210,
    "agent_configs": [
        {
            "agent_meta_id": 10001,
            "side": "red",
            "params": {"attack_strategy": "aggressive", "target": "192.168.1.100"},
        },
        {"agent_meta_id": 10002, "side": "blue", "params": {"defense_level": "high"}},
    ],
}
CreateBody = Annotated[
    TaskCreate,
    BodyKwarg(
        media_type=RequestEncodingType.JSON,
        examples=[Example(summary="the plan's red/blue example", value=PLAN_TASK)],
    ),
]
UpdateBody = Annotated[TaskUpdate, BodyKwarg(media_type=RequestEncodingType.JSON)]
PriorityBody = Annotated[TaskPriorityChange, BodyKwarg(media_type=RequestEncodingType.JSON)]
AnyRequest = Request[Any, Any, Any]
_PLAIN_ID = re.compile(r"[1-9][0-9]{0,15}")


async def live_detail(request: AnyRequest) -> Response[Any] | None:
    """GET /task/{id} with no query: the live detail, answered before Litestar parses the
    handler's parameters and resolves its dependencies (two thirds of the API's own CPU in
    this, its hottest read: D26). Anything else — an as-of read, an id not in plain decimal
    form — returns None and goes to `get_task`, which answers it as before."""
    if request.scope["query_string"]:
        return None
    text = request.scope["path_params"]["task_id"]
    if not _PLAIN_ID.fullmatch(text) or int(text) > MAX_ID:
        return None
    reads: ReadViews = request.app.state.reads
    task_id = int(text)
    body = await reads.tasks.detail_json(task_id)
    if body is None:
        raise commands.NotFoundError("task", task_id)
    return Response(body, media_type=MediaType.JSON)


class TaskController(Controller):
    path = "/api/v1/deduction/task"
    tags = ("tasks",)

    @post(
        "/create",
        status_code=200,
        operation_id="createTask",
        opt=auth.COMMAND,
        responses=documented(400, 409, 413, 422, 503),
    )
    async def create_task(
        self,
        services: ServicesDep,
        request: AnyRequest,
        data: CreateBody,
        actor: ActorDep,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> TaskCreatedResponse:
        """Create a task from catalog entries; the worker then submits it to the Engine.

        Unknown agent_meta_id, scheme_id or env_instance_id: 422 naming the field.
        A name already used: 409. With an `Idempotency-Key` header, a retry of the same
        request answers the first one's task; the key with another request: 422.
        """
        body = await strict_body(request, TaskCreate)
        check_task_create(body)
        new = commands.NewTask(
            name=body.name,
            description=body.description,
            scheme_id=body.scheme_id,
            env_instance_id=body.env_instance_id,
            agent_configs=[
                commands.AgentConfig(c.agent_meta_id, c.side, c.params, c.max_retry)
                for c in body.agent_configs
            ],
            priority=body.priority or DEFAULT_PRIORITY,
        )
        receipt = await services.command(services.app.create_task, new, actor, idempotency_key)
        task_id = receipt.data["task_id"]
        await dispatch(services.dispatcher.task_created, task_id)
        return ok(
            views.TaskCreated(task_id, receipt.data["status"], rfc3339(receipt.data["create_time"]))
        )

    @get("/list", operation_id="listTasks", responses=documented(422, 503), opt=auth.READ)
    async def list_tasks(
        self,
        reads: ReadsDep,
        page: TaskPageNo = 1,
        size: PageSize = 20,
        status: StatusFilter = None,
        after_id: TaskAfterId = None,
    ) -> TaskPageResponse:
        """Tasks, newest first. `total` counts the matching tasks up to 10,000 (beyond,
        `total_is_lower_bound` is true). Pages are numbered up to 100; deeper pages are read
        by keyset: `after_id` = the previous page's `next_cursor`."""
        if page > MAX_TASK_PAGE:
            raise InputError("page", f"page must be between 1 and {MAX_TASK_PAGE}: page deeper"
                             " by keyset, passing after_id = the next_cursor of the previous"
                             " page")  # fmt: skip
        found = await reads.tasks.page(page, size, status, after_id)
        items = [views.from_row(views.Task, r) for r in found.rows]
        return ok(views.TaskPage(total=found.total, page=page, size=size, items=items,
                                 total_is_lower_bound=found.total_is_lower_bound,
                                 next_cursor=found.next_cursor))  # fmt: skip

    @get(
        "/{task_id:str}",
        operation_id="getTask",
        opt=auth.READ_AS_OF,
        responses=documented(404, 422, 503),
        response_headers=audit.AS_OF_HEADERS,
        before_request=live_detail,
    )
    async def get_task(
        self,
        reads: ReadsDep,
        services: ServicesDep,
        task_id: TaskId,
        as_of: audit.AsOf = None,
        as_of_position: audit.AsOfPosition = None,
    ) -> Response[TaskDetailResponse]:
        """Every column of the task and of each of its agent executions (in config order);
        with as_of or as_of_position, as it was then (rebuilt from the events)."""
        # The live read without a query is answered by `live_detail`; this is the rest.
        if as_of is not None or as_of_position is not None:
            _, state = await audit.task_state(services, task_id, as_of, as_of_position)
            agents = [views.from_row(views.AgentExecution, r) for r in state.agents]
            detail = views.from_row(views.TaskDetail, state.task or {}, agent_executions=agents)
            return audit.as_of_response(detail, state.position)
        body = await reads.tasks.detail_json(task_id)
        if body is None:
            raise commands.NotFoundError("task", task_id)
        # The view serves this response already encoded as JSON; the annotation documents it.
        return Response(body, media_type=MediaType.JSON)  # type: ignore[arg-type]

    @post(
        "/{task_id:str}/stop",
        status_code=200,
        operation_id="stopTask",
        opt=auth.COMMAND,
        responses=documented(404, 409, 422, 503),
    )
    async def stop_task(
        self, services: ServicesDep, task_id: TaskId, actor: ActorDep
    ) -> TaskStoppedResponse:
        """Stop a pending or running task; stopping a stopped task again changes nothing.

        A completed or failed task cannot be stopped: 409.
        """
        receipt = await services.command(services.app.request_stop, task_id, actor)
        if receipt.data.get("changed"):
            await dispatch(services.dispatcher.stop_requested, task_id)
        return ok(views.TaskStopped(task_id, receipt.data["status"]), "任务已停止")

    @post(
        "/{task_id:str}/priority",
        status_code=200,
        operation_id="raiseTaskPriority",
        opt=auth.COMMAND,
        responses=documented(400, 404, 409, 413, 422, 503),
    )
    async def raise_priority(
        self,
        services: ServicesDep,
        request: AnyRequest,
        task_id: TaskId,
        data: PriorityBody,
        actor: ActorDep,
    ) -> TaskPriorityResponse:
        """Raise the priority of a task that waits for admission (queue_position not null);
        its history gets a `priority_change` entry. The same priority again changes nothing.

        A lower priority, or a task already submitted, stopped or ended: 409.
        """
        body = await strict_body(request, TaskPriorityChange)
        receipt = await services.command(services.app.raise_priority, task_id, body.priority, actor)
        if receipt.data["changed"]:
            await dispatch(services.dispatcher.task_created, task_id)  # it may now be first
        return ok(views.TaskPriority(task_id, receipt.data["priority"]))

    @put(
        "/{task_id:str}/update",
        operation_id="updateTask",
        opt=auth.COMMAND,
        responses=documented(400, 404, 409, 413, 422, 503),
    )
    async def update_task(
        self,
        services: ServicesDep,
        request: AnyRequest,
        task_id: TaskId,
        data: UpdateBody,
        actor: ActorDep,
    ) -> TaskUpdatedResponse:
        """Merge new params into agent executions of the task: keys given replace, others stay.

        Only while the task is pending or running (else 409). An agent_execution_id
        that is not of this task: 422 naming the field. Old and new values go to the
        task's history with the operator.
        """
        body = await strict_body(request, TaskUpdate)
        check_task_update(body)
        changes = [(c.agent_execution_id, c.params) for c in body.agent_configs]
        receipt = await services.command(services.app.update_config, task_id, changes, actor)
        await dispatch(services.dispatcher.update_requested, task_id)
        return ok(views.TaskUpdated(receipt.data["updated_count"]), "配置已更新")
