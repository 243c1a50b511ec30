"""Task and board streams over HTTP: SSE read as EventSource does, WebSocket, resume, limits."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.api import TASK, Api, create_task, drive_task, task_detail
from tests.support.logs import log_lines, save_logs
from tests.support.streams import BOARD, Message, body, open_sse, read_sse, read_ws, sse_events


async def history_of(api: Api, task_id: int) -> list[dict[str, Any]]:
    status, answer = await api.call("GET", f"{TASK}/{task_id}/history")
    assert status == 200, answer
    return list(answer["data"])


async def lines_of(api: Api, task_id: int, level: str | None = None) -> list[dict[str, Any]]:
    """Every stored line of the task, oldest first, through the log endpoint's pages."""
    out: list[dict[str, Any]] = []
    params = {"order": "asc", "limit": "1000", **({"level": level} if level else {})}
    while True:
        status, answer = await api.call("GET", f"{TASK}/{task_id}/logs", params=params)
        assert status == 200, answer
        out += answer["data"]["logs"]
        if answer["data"]["next_cursor"] is None:
            return out
        params["after_id"] = str(answer["data"]["next_cursor"])


def streamed_lines(messages: list[Message]) -> list[dict[str, Any]]:
    return [line for m in messages if m.type == "logs" for line in m.data["lines"]]


def assert_in_order_once(messages: list[Message]) -> None:
    keys = [m.key for m in messages]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), keys


async def assert_everything(api: Api, task_id: int, messages: list[Message]) -> None:
    """The stream carried every history entry and log line the endpoints show, in order,
    the task's and each agent's last state, and ended once, last."""
    assert_in_order_once(messages)
    assert [m.data["entry"] for m in messages if m.type == "history"] == await history_of(
        api, task_id
    )
    assert streamed_lines(messages) == await lines_of(api, task_id)
    detail = await task_detail(api, task_id)
    task = [m.data["task"] for m in messages if m.type == "task"][-1]
    assert {k: detail[k] for k in task} == task
    for agent in detail["agent_executions"]:
        last = [m.data["agent"] for m in messages if m.type == "agent"
                and m.data["agent"]["id"] == agent["id"]][-1]  # fmt: skip
        assert {k: agent[k] for k in last} == last
    assert [m.type for m in messages].count("end") == 1 and messages[-1].type == "end"
    assert messages[-1].data["status"] == detail["status"]


async def test_a_task_stream_replays_the_tables_then_follows_changes(
    task: dict[str, Any], catalog: Api
) -> None:
    api, task_id = catalog, task["id"]
    execution_id = task["agent_executions"][0]["id"]
    first = await read_sse(api, task_id, limit=4)  # created: its history entry, task, agents
    assert first[0].data["entry"]["change_description"] == "task created with 2 agents"
    assert sorted(m.type for m in first[1:]) == ["agent", "agent", "task"]
    assert {m.data[m.type]["status"] for m in first[1:]} == {"pending"}

    async def changes() -> None:
        await drive_task(api, task_id, "running")
        await save_logs(api, execution_id, task_id, [log_lines(5), log_lines(3, start=5)])
        await drive_task(api, task_id, "failed")

    async with asyncio.TaskGroup() as group:
        sse = group.create_task(read_sse(api, task_id, last_id=first[-1].id))
        ws = group.create_task(read_ws(api, task_id, after=first[-1].id))
        await asyncio.sleep(0.3)
        await changes()
    streamed = first + sse.result()
    await assert_everything(api, task_id, streamed)
    assert [body(m) for m in ws.result()] == [body(m) for m in sse.result()]
    assert len(streamed_lines(streamed)) == 8


async def test_log_lines_follow_the_level_filter(task: dict[str, Any], catalog: Api) -> None:
    api, task_id = catalog, task["id"]
    execution_id = task["agent_executions"][1]["id"]
    await save_logs(api, execution_id, task_id, [log_lines(12), log_lines(12, start=12)])
    await drive_task(api, task_id, "running", "failed")
    for read in (read_sse, read_ws):
        messages = await read(api, task_id, level="ERROR")
        lines = streamed_lines(messages)
        assert lines == await lines_of(api, task_id, "ERROR")
        assert lines and {line["level"] for line in lines} <= {"ERROR", "CRITICAL"}


async def test_a_stream_resumed_after_its_end_says_there_is_no_more(
    task: dict[str, Any], catalog: Api
) -> None:
    api, task_id = catalog, task["id"]
    await drive_task(api, task_id, "running", "completed")
    messages = await read_sse(api, task_id)
    assert messages[-1].type == "end" and messages[-1].data["status"] == "completed"
    async with open_sse(api, f"{TASK}/{task_id}/stream", messages[-1].id) as response:
        assert response.status == 204  # EventSource stops reconnecting
    assert await read_ws(api, task_id, after=messages[-1].id) == []
    again = await read_sse(api, task_id, last_id=messages[-3].id)
    assert [m.id for m in again] == [m.id for m in messages[-2:]]


async def test_unknown_tasks_and_malformed_cursors_are_refused(catalog: Api) -> None:
    status, answer = await catalog.call("GET", f"{TASK}/4242/stream")
    assert (status, answer["code"]) == (404, 404)
    status, answer = await catalog.call("GET", f"{BOARD}?after=twelve")
    assert (status, answer["code"]) == (422, 422) and "after" in answer["message"]


async def test_the_board_shows_task_changes_of_its_status(catalog: Api) -> None:
    running = (await create_task(catalog, name="board-running"))["id"]
    pending = (await create_task(catalog, name="board-pending"))["id"]
    await drive_task(catalog, running, "running")
    seen: list[Message] = []
    async with open_sse(catalog, BOARD, status="running") as response:
        assert response.status == 200
        events = sse_events(response)
        async for m in events:
            if m is not None:
                seen.append(m)
                break
        await drive_task(catalog, running, "completed")
        async for m in events:
            if m is not None:
                seen.append(m)
                break
    assert {m.type for m in seen} == {"task"}
    assert [(m.data["task"]["id"], m.data["task"]["status"]) for m in seen] == [
        (running, "running"), (running, "completed")]  # fmt: skip
    assert pending not in {m.data["task"]["id"] for m in seen}
