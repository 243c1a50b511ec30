"""Task and board streams over HTTP: SSE read as EventSource does, WebSocket, resume, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.bootstrap import open_services
from tests.support.api import TASK, Api, create_task, drive_task, serve_api, settings_for
from tests.support.logs import log_lines, save_logs
from tests.support.streams import (
    BOARD,
    Message,
    assert_everything,
    body,
    lines_of,
    open_sse,
    read_sse,
    read_ws,
    sse_events,
    streamed_lines,
)


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


@pytest.fixture
async def small_api(db_url: str) -> AsyncIterator[Api]:
    """An API process that serves two streams at most and beats every 0.2 s."""
    settings = settings_for(db_url, stream_max_subscribers=2, stream_heartbeat=0.2)
    async with open_services(settings) as services, serve_api(services) as api:
        await services.run_sync(load_catalog, services.app, demo_catalog())
        yield api


async def test_idle_streams_beat_and_streams_beyond_the_cap_are_refused(small_api: Api) -> None:
    task_id = (await create_task(small_api, name="capped"))["id"]
    url = small_api.base.replace("http", "ws", 1) + f"{TASK}/{task_id}/ws"
    async with open_sse(small_api, BOARD) as board, small_api.session.ws_connect(url) as ws:
        beats = 0
        async for m in sse_events(board):
            beats += m is None
            if beats == 2:
                break
        kinds = set()
        while "heartbeat" not in kinds:
            kinds.add(msgspec.json.decode((await ws.receive(timeout=5)).data)["type"])
        status, answer = await small_api.call("GET", f"{TASK}/{task_id}/stream")
        assert (status, answer["code"]) == (503, 503) and "2 streams" in answer["message"]
        async with small_api.session.ws_connect(url) as third:
            await third.receive(timeout=5)
            assert third.close_code == 1013
    async with open_sse(small_api, f"{TASK}/{task_id}/stream") as again:
        assert again.status == 200  # closed streams free their places
