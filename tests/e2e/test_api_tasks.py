"""Tasks over HTTP: the plan's create → detail → agents → list → update → stop → history flow."""

from __future__ import annotations

import re
from typing import Any

from deduction.domain.ids import MAX_ID
from tests.support.api import TASK, Api, create_task, drive_task, event_head
from tests.support.plan import plan_task

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EXECUTION = "/api/v1/deduction/agent-execution"
STEALTH = {"attack_strategy": "stealth"}
TASK_FIELDS = {
    "id", "name", "description", "status", "scheme_id", "env_instance_id", "engine_task_id",
    "engine_url", "scheme_snapshot", "start_time", "end_time", "total_agents",
    "completed_agents", "failed_agents", "error_message", "create_at", "update_at",
    "created_by", "stop_requested", "engine_unreachable_since", "engine_error", "priority",
    "queue_position",
}  # fmt: skip
EXECUTION_FIELDS = {
    "id", "deduction_task_id", "seq", "agent_meta_id", "agent_name", "agent_load", "side",
    "params", "status", "engine_agent_id", "progress", "start_time", "end_time", "result",
    "error_message", "retry_count", "max_retry", "create_at", "update_at", "log_lines_skipped",
    "log_gaps",
}  # fmt: skip


async def test_create_answers_with_the_plans_data(catalog: Api) -> None:
    """The plan's create payload answers 200 with task_id, status and create_time."""
    status, body = await catalog.call("POST", f"{TASK}/create", json=plan_task())

    assert status == 200
    assert body["code"] == 200 and body["message"] == "success"
    data = body["data"]
    assert set(data) == {"task_id", "status", "create_time"}
    assert data["status"] == "pending"
    assert 0 < data["task_id"] <= MAX_ID
    assert RFC3339_Z.match(data["create_time"])


async def test_detail_carries_every_column_and_the_agents_in_config_order(
    task: dict[str, Any],
) -> None:
    """The detail has every task column and each agent with the catalog's name and load name."""
    assert set(task) == TASK_FIELDS | {"agent_executions"}
    assert task["name"] == "task_20251112_001"
    assert task["description"] == "红蓝对抗演练任务"
    assert (task["scheme_id"], task["env_instance_id"]) == (1234567890, 9876543210)
    assert task["scheme_snapshot"]["name"] == "red-blue-demo"
    assert task["scheme_snapshot"]["config"]["rounds"] == 10
    assert (task["total_agents"], task["completed_agents"], task["failed_agents"]) == (2, 0, 0)
    assert task["start_time"] is None and task["end_time"] is None
    assert task["engine_task_id"] is None and task["error_message"] is None
    assert task["created_by"] == "anonymous" and task["stop_requested"] is False
    assert RFC3339_Z.match(task["create_at"]) and RFC3339_Z.match(task["update_at"])

    red, blue = task["agent_executions"]
    assert set(red) == EXECUTION_FIELDS
    assert (red["agent_name"], red["agent_load"], red["side"]) == (
        "RedTeamAgent", "red_team_agent_v1", "red"
    )  # fmt: skip
    assert (blue["agent_name"], blue["agent_load"], blue["side"]) == (
        "BlueTeamAgent", "blue_team_agent_v1", "blue"
    )  # fmt: skip
    assert red["params"] == {"attack_strategy": "aggressive", "target": "192.168.1.100"}
    assert (red["seq"], blue["seq"]) == (0, 1)
    assert red["deduction_task_id"] == task["id"]
    assert (red["status"], red["progress"], red["retry_count"], red["max_retry"]) == (
        "pending", 0, 0, 3
    )  # fmt: skip
    assert red["result"] is None and red["engine_agent_id"] is None


async def test_unknown_task_is_404(api: Api) -> None:
    """A task id that names nothing answers 404 with the id in the message."""
    status, body = await api.call("GET", f"{TASK}/123456")
    assert status == 404
    assert body == {"code": 404, "message": "task 123456 does not exist", "data": None}


async def test_operator_header_is_recorded_as_creator(catalog: Api) -> None:
    """X-Operator names who created the task; without it the creator is `anonymous`."""
    status, body = await catalog.call(
        "POST", f"{TASK}/create", json=plan_task(), headers={"X-Operator": "alice"}
    )
    assert status == 200
    _, detail = await catalog.call("GET", f"{TASK}/{body['data']['task_id']}")
    assert detail["data"]["created_by"] == "alice"


async def test_create_names_the_unknown_reference_and_creates_nothing(catalog: Api) -> None:
    """Unknown agent_meta_id / scheme_id / env_instance_id: 422 naming the field and the id."""
    configs = plan_task()["agent_configs"]
    configs[1]["agent_meta_id"] = 99
    before = await event_head(catalog)
    cases = [
        (plan_task(agent_configs=configs), "agent_configs[1].agent_meta_id", "99"),
        (plan_task(scheme_id=5), "scheme_id", "5"),
        (plan_task(env_instance_id=6), "env_instance_id", "6"),
    ]
    for payload, field, ident in cases:
        status, body = await catalog.call("POST", f"{TASK}/create", json=payload)
        assert status == 422, body
        assert body["message"] == f"{field}: {ident} does not exist"
        assert body["data"]["errors"] == [{"field": field, "message": body["message"]}]
    assert await event_head(catalog) == before
    _, listing = await catalog.call("GET", f"{TASK}/list")
    assert listing["data"]["total"] == 0


async def test_a_taken_name_is_409(task: dict[str, Any], catalog: Api) -> None:
    """Creating a second task with the same name answers 409 and says why."""
    status, body = await catalog.call("POST", f"{TASK}/create", json=plan_task())
    assert status == 409
    assert body["message"] == "a task named 'task_20251112_001' already exists"


async def test_list_is_newest_first_with_exact_total_and_page_edges(catalog: Api) -> None:
    """Pages of `size` items, newest first; a page past the end is empty with the same total."""
    ids = [(await create_task(catalog, name=f"t{i}"))["id"] for i in range(5)]

    pages = []
    for page in (1, 2, 3, 4):
        status, body = await catalog.call("GET", f"{TASK}/list?page={page}&size=2")
        assert status == 200
        data = body["data"]
        assert (data["total"], data["page"], data["size"]) == (5, page, 2)
        pages.append([item["id"] for item in data["items"]])

    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5], []]
    _, default = await catalog.call("GET", f"{TASK}/list")
    assert (default["data"]["page"], default["data"]["size"]) == (1, 20)
    assert set(default["data"]["items"][0]) == TASK_FIELDS


async def test_list_filters_by_status(catalog: Api) -> None:
    """status=stopped lists only stopped tasks, and total counts only them."""
    kept = await create_task(catalog, name="kept")
    stopped = await create_task(catalog, name="stopped")
    await catalog.call("POST", f"{TASK}/{stopped['id']}/stop")

    _, only_stopped = await catalog.call("GET", f"{TASK}/list?status=stopped")
    _, only_pending = await catalog.call("GET", f"{TASK}/list?status=pending")
    _, running = await catalog.call("GET", f"{TASK}/list?status=running")

    assert [t["id"] for t in only_stopped["data"]["items"]] == [stopped["id"]]
    assert [t["id"] for t in only_pending["data"]["items"]] == [kept["id"]]
    assert running["data"] == {"total": 0, "page": 1, "size": 20, "items": [],
                               "total_is_lower_bound": False, "next_cursor": None}  # fmt: skip


async def test_list_bounds_are_422_and_name_the_parameter(api: Api) -> None:
    """page >= 1 and 1 <= size <= 100; size=100 is accepted."""
    for query, message in [
        ("page=0", "page must be between 1 and 9007199254740991"),
        ("size=0", "size must be between 1 and 100"),
        ("size=101", "size must be between 1 and 100"),
        ("size=abc", "size must be an integer, not a string"),
    ]:
        status, body = await api.call("GET", f"{TASK}/list?{query}")
        assert (status, body["code"], body["message"]) == (422, 422, message), query
    status, _ = await api.call("GET", f"{TASK}/list?size=100")
    assert status == 200


async def test_agents_of_a_task_in_config_order_and_by_status(
    task: dict[str, Any], catalog: Api
) -> None:
    """GET /task/{id}/agents lists the executions; ?status filters; unknown task is 404."""
    status, body = await catalog.call("GET", f"{TASK}/{task['id']}/agents")
    assert status == 200
    assert [a["agent_name"] for a in body["data"]] == ["RedTeamAgent", "BlueTeamAgent"]
    assert body["data"] == task["agent_executions"]

    _, running = await catalog.call("GET", f"{TASK}/{task['id']}/agents?status=running")
    assert running["data"] == []
    status, missing = await catalog.call("GET", f"{TASK}/777/agents")
    assert (status, missing["message"]) == (404, "task 777 does not exist")


async def test_agent_execution_detail(task: dict[str, Any], catalog: Api) -> None:
    """GET /agent-execution/{id} shows every column of one execution; unknown is 404."""
    red = task["agent_executions"][0]
    status, body = await catalog.call("GET", f"{EXECUTION}/{red['id']}")
    assert status == 200
    assert body["data"] == red

    status, missing = await catalog.call("GET", f"{EXECUTION}/5")
    assert (status, missing["message"]) == (404, "agent execution 5 does not exist")


async def test_update_merges_params_and_answers_updated_count(
    task: dict[str, Any], catalog: Api
) -> None:
    """Keys given replace, other keys stay; the other agent is untouched."""
    red, blue = task["agent_executions"]
    update = {"agent_configs": [{"agent_execution_id": red["id"], "params": STEALTH}]}

    status, body = await catalog.call("PUT", f"{TASK}/{task['id']}/update", json=update)

    assert status == 200
    assert body == {"code": 200, "message": "配置已更新", "data": {"updated_count": 1}}
    _, after = await catalog.call("GET", f"{TASK}/{task['id']}")
    red_after, blue_after = after["data"]["agent_executions"]
    assert red_after["params"] == {"attack_strategy": "stealth", "target": "192.168.1.100"}
    assert blue_after["params"] == blue["params"]


async def test_history_shows_old_and_new_params_with_the_operator(
    task: dict[str, Any], catalog: Api
) -> None:
    """An update is in the history as config_update with old value, new value and operator."""
    red = task["agent_executions"][0]
    update = {"agent_configs": [{"agent_execution_id": red["id"], "params": STEALTH}]}
    await catalog.call(
        "PUT", f"{TASK}/{task['id']}/update", json=update, headers={"X-Operator": "alice"}
    )

    status, body = await catalog.call("GET", f"{TASK}/{task['id']}/history")

    assert status == 200
    updates = [h for h in body["data"] if h["change_type"] == "config_update"]
    assert len(updates) == 1
    entry = updates[0]
    assert entry["old_value"] == {"attack_strategy": "aggressive"}
    assert entry["new_value"] == {"attack_strategy": "stealth"}
    assert entry["operator"] == "alice"
    assert entry["agent_execution_id"] == red["id"]
    assert "attack_strategy" in entry["change_description"]
    assert RFC3339_Z.match(entry["change_time"])
    assert body["data"][0]["change_type"] == "status_change"  # the creation comes first


async def test_update_refuses_bad_lists_with_422_and_changes_nothing(
    task: dict[str, Any], catalog: Api
) -> None:
    """Empty lists, other tasks' executions and empty params are 422."""
    red = task["agent_executions"][0]
    other = await create_task(catalog, name="other")
    foreign = other["agent_executions"][0]["id"]
    entry = {"agent_execution_id": red["id"], "params": {"a": 1}}
    before = await event_head(catalog)
    cases = [
        ({"agent_configs": []}, "agent_configs must not be empty"),
        (
            {"agent_configs": [entry, {"agent_execution_id": foreign, "params": {"a": 1}}]},
            (
                f"agent_configs[1].agent_execution_id: {foreign} is not an agent execution"
                f" of task {task['id']}"
            ),
        ),
        (
            {"agent_configs": [{"agent_execution_id": red["id"], "params": {}}]},
            "agent_configs[0].params must not be empty",
        ),
    ]
    for payload, message in cases:
        status, body = await catalog.call("PUT", f"{TASK}/{task['id']}/update", json=payload)
        assert (status, body["message"]) == (422, message)
    assert await event_head(catalog) == before


async def test_an_execution_listed_twice_gets_both_changes_in_order(
    task: dict[str, Any], catalog: Api
) -> None:
    """Entries for the same execution merge in list order: the later value of a key wins."""
    red = task["agent_executions"][0]
    first = {"agent_execution_id": red["id"], "params": {"a": 1, "b": 1}}
    second = {"agent_execution_id": red["id"], "params": {"b": 2}}
    payload = {"agent_configs": [first, second]}
    status, body = await catalog.call("PUT", f"{TASK}/{task['id']}/update", json=payload)
    assert (status, body["data"]) == (200, {"updated_count": 1})
    _, agent = await catalog.call("GET", f"/api/v1/deduction/agent-execution/{red['id']}")
    assert {k: agent["data"]["params"][k] for k in ("a", "b")} == {"a": 1, "b": 2}


async def test_whole_numbers_written_with_a_fraction_are_integers(catalog: Api) -> None:
    """JSON Schema counts 1234567890.0 as an integer, and so does the server; 1.5 is not one."""
    whole = plan_task(name="whole", scheme_id=1234567890.0)
    status, body = await catalog.call("POST", f"{TASK}/create", json=whole)
    assert status == 200, body
    half = plan_task(name="half", scheme_id=1.5)
    status, body = await catalog.call("POST", f"{TASK}/create", json=half)
    assert (status, body["data"]["errors"][0]["field"]) == (422, "scheme_id")


async def test_update_of_an_unknown_task_is_404(api: Api) -> None:
    """Updating a task that does not exist answers 404."""
    update = {"agent_configs": [{"agent_execution_id": 1, "params": {"a": 1}}]}
    status, body = await api.call("PUT", f"{TASK}/42/update", json=update)
    assert (status, body["message"]) == (404, "task 42 does not exist")


async def test_stop_answers_the_plans_shape_and_stops_every_agent(
    task: dict[str, Any], catalog: Api
) -> None:
    """Stopping a pending task: 200 "任务已停止", the task and its agents are stopped."""
    status, body = await catalog.call(
        "POST", f"{TASK}/{task['id']}/stop", headers={"X-Operator": "bob"}
    )

    assert status == 200
    assert body == {
        "code": 200,
        "message": "任务已停止",
        "data": {"task_id": task["id"], "status": "stopped"},
    }
    _, detail = await catalog.call("GET", f"{TASK}/{task['id']}")
    assert detail["data"]["status"] == "stopped"
    assert detail["data"]["stop_requested"] is True
    assert RFC3339_Z.match(detail["data"]["end_time"])
    assert {a["status"] for a in detail["data"]["agent_executions"]} == {"stopped"}

    _, history = await catalog.call("GET", f"{TASK}/{task['id']}/history")
    stop = [h for h in history["data"] if h["change_type"] == "stop_request"]
    assert [(h["operator"], h["change_description"]) for h in stop] == [
        ("bob", "stop requested by bob")
    ]
    status_changes = [h for h in history["data"] if h["change_type"] == "status_change"]
    assert status_changes[-1]["new_value"]["status"] == "stopped"
    assert status_changes[-1]["operator"] == "bob"


async def test_stopping_a_stopped_task_again_changes_nothing(
    task: dict[str, Any], catalog: Api
) -> None:
    """The second stop answers 200 with the same data and records no new event."""
    first = await catalog.call("POST", f"{TASK}/{task['id']}/stop")
    before = await event_head(catalog)

    second = await catalog.call("POST", f"{TASK}/{task['id']}/stop")

    assert second == first
    assert await event_head(catalog) == before


async def test_stopping_a_completed_or_failed_task_is_409(catalog: Api) -> None:
    """A task that ended on its own cannot be stopped, and stays as it was."""
    completed = await create_task(catalog, name="done")
    failed = await create_task(catalog, name="broken")
    await drive_task(catalog, completed["id"], "running", "completed")
    await drive_task(catalog, failed["id"], "failed")

    for task_id, ended in [(completed["id"], "completed"), (failed["id"], "failed")]:
        status, body = await catalog.call("POST", f"{TASK}/{task_id}/stop")
        assert status == 409
        assert body["message"] == (f"cannot stop: the task has already ended with status '{ended}'")
        _, detail = await catalog.call("GET", f"{TASK}/{task_id}")
        assert detail["data"]["status"] == ended


async def test_updating_an_ended_task_is_409(task: dict[str, Any], catalog: Api) -> None:
    """Params change only while the task is pending or running."""
    await catalog.call("POST", f"{TASK}/{task['id']}/stop")
    red = task["agent_executions"][0]
    update = {"agent_configs": [{"agent_execution_id": red["id"], "params": {"a": 1}}]}

    status, body = await catalog.call("PUT", f"{TASK}/{task['id']}/update", json=update)

    assert status == 409
    assert "already ended with status 'stopped'" in body["message"]
    _, after = await catalog.call("GET", f"{EXECUTION}/{red['id']}")
    assert after["data"]["params"] == red["params"]


async def test_a_running_task_shows_its_start_time(task: dict[str, Any], catalog: Api) -> None:
    """When the task runs, the detail shows start_time and the list filters it as running."""
    await drive_task(catalog, task["id"], "running")

    _, detail = await catalog.call("GET", f"{TASK}/{task['id']}")
    _, listing = await catalog.call("GET", f"{TASK}/list?status=running")

    assert detail["data"]["status"] == "running"
    assert RFC3339_Z.match(detail["data"]["start_time"])
    assert [t["id"] for t in listing["data"]["items"]] == [task["id"]]
