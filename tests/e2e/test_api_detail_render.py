"""The task detail rendered by PostgreSQL equals the response Structs, field for field."""

from __future__ import annotations

import msgspec

from deduction.adapters.http import views
from deduction.application.service import DeductionApp
from deduction.projections.agents import PostgresAgentView
from deduction.projections.tasks import PostgresTaskView
from tests.support.api import Api
from tests.support.plan import new_task, seed_catalog


def run_task_to_the_end(app: DeductionApp, name: str) -> int:
    """A task with every column filled: engine ids, times, results, errors, counts, updates."""
    task_id = app.create_task(new_task(name), "alice").data["task_id"]
    task = app.get_task(task_id)
    red, blue = (app.get_execution(e) for e in task.execution_ids)
    task.request_submission()
    task.record_submitted("eng-1", "http://engine:8080")
    task.record_engine_unreachable("2025-11-12T10:31:00.5Z", "connection refused")
    task.record_engine_reachable()
    red.assign_engine_agent("agent-red")
    red.change_status("running", "engine")
    red.report_progress(100)
    red.change_status("completed", "engine", result={"score": 0.75, "flags": ["a", "b"], "n": None})
    blue.assign_engine_agent("agent-blue")
    blue.change_status("running", "engine")
    blue.record_attempt_failed("host 3 unreachable")
    blue.change_status("failed", "engine", error="gave up: 红队 won")
    task.record_agent_counts(2, 1, 1)
    task.change_status("failed", "agent BlueTeamAgent failed", "engine")
    app.save(task, red, blue)
    return task_id


async def test_detail_json_matches_the_structs_for_every_column(api: Api) -> None:
    """Same keys, same order, same values and time format as `views.TaskDetail`."""
    app = api.services.app
    await api.services.run_sync(seed_catalog, app)
    pending = await api.call(
        "POST", "/api/v1/deduction/task/create", json=msgspec.to_builtins(new_task("fresh"))
    )
    assert pending[0] == 200
    ended = await api.services.run_sync(run_task_to_the_end, app, "ended")
    await api.services.runner.wait_for(app.recorder.max_notification_id() or 0, 10)
    tasks, executions = PostgresTaskView(api.services.pool), PostgresAgentView(api.services.pool)
    for task_id in (pending[1]["data"]["task_id"], ended):
        row, agents = await tasks.task(task_id), await executions.of_task(task_id)
        assert row is not None and agents is not None
        expected = views.from_row(
            views.TaskDetail,
            row,
            agent_executions=[views.from_row(views.AgentExecution, a) for a in agents],
        )
        async with api.session.get(f"{api.base}/api/v1/deduction/task/{task_id}") as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            body = await r.read()
        decoded = msgspec.json.decode(body)
        assert decoded == {"code": 200, "message": "success", "data": msgspec.to_builtins(expected)}
        assert list(decoded["data"]) == list(views.TaskDetail.__struct_fields__)
        msgspec.json.decode(body, type=msgspec.defstruct("E", [("data", views.TaskDetail)]))
    detail = decoded["data"]
    assert detail["status"] == "failed" and detail["error_message"] == "agent BlueTeamAgent failed"
    assert detail["agent_executions"][0]["result"] == {
        "score": 0.75,
        "flags": ["a", "b"],
        "n": None,
    }
    assert detail["start_time"].endswith("Z") and len(detail["start_time"]) == 27
