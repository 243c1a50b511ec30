"""Auditors over HTTP: a task's stored events, its state as of any moment, history paging,
and the export file."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection

from deduction.adapters.audit_chain import extend_chain
from deduction.application.audit_file import verify_file
from deduction.application.service import DeductionApp
from deduction.application.services import Services
from deduction.bootstrap import open_services
from tests.support.api import TASK, Api, settings_for
from tests.support.logs import log_lines, save_logs

pytestmark = pytest.mark.slow


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    """The services with a snapshot every few events, so as-of answers here come from them."""
    async with open_services(settings_for(db_url, as_of_snapshot_every=3)) as s:
        yield s


def _start(app: DeductionApp, task_id: int) -> int:
    task = app.get_task(task_id)
    task.record_submitted("engine-1", "http://engine")
    return max(r.notification.id for r in app.save(task))


def _step(app: DeductionApp, task_id: int, rng: random.Random) -> int:
    """One random thing that can happen to a running task; returns the newest position."""
    task = app.get_task(task_id)
    executions = [app.get_execution(i) for i in task.execution_ids]
    ex = rng.choice(executions)
    if ex.is_ended or task.is_ended:
        return 0
    choice = rng.randrange(5)
    if choice == 0:
        ex.update_params({"k": rng.randrange(100)}, rng.choice(["alice", "bob"]))
    elif choice == 1:
        ex.apply_engine_report("running", rng.randrange(100), None, None)
    elif choice == 2:
        ex.apply_engine_report("failed", 50, None, "boom", restart_supported=True)
    elif choice == 3:
        ex.apply_engine_report("running", 5, None, None)
    else:
        ex.apply_engine_report("completed", 100, {"score": rng.randrange(10)}, None)
    task.settle(executions)
    return max((r.notification.id for r in app.save(task, *executions)), default=0)


async def _head(api: Api) -> int:
    return int(await api.services.run_sync(api.services.app.recorder.max_notification_id) or 0)


async def _live(api: Api, task_id: int, execution_id: int) -> dict[str, Any]:
    answers = {}
    for key, path in (
        ("detail", f"{TASK}/{task_id}"),
        ("agents", f"{TASK}/{task_id}/agents"),
        ("history", f"{TASK}/{task_id}/history"),
        ("execution", f"/api/v1/deduction/agent-execution/{execution_id}"),
    ):
        status, body = await api.call("GET", path)
        assert status == 200, body
        answers[key] = body["data"]
    return answers


def _settled(answer: Any) -> Any:
    """An answer without the task's queue position (the only field that is not event state)."""
    if isinstance(answer, dict) and "queue_position" in answer:
        return {k: v for k, v in answer.items() if k != "queue_position"}
    return answer


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_as_of_answers_equal_the_live_answers_at_random_moments(
    task: dict[str, Any], catalog: Api, seed: int
) -> None:
    """For random moments of random runs, the answer rebuilt as of a position equals what the
    live endpoints returned when the store was at that position."""
    api, app = catalog, catalog.services.app
    task_id, execution_id = task["id"], task["agent_executions"][0]["id"]
    recorded: list[tuple[int, dict[str, Any]]] = []
    rng = random.Random(seed)
    position = await _head(api)
    recorded.append((position, await _live(api, task_id, execution_id)))
    await api.services.run_sync(_start, app, task_id)
    for _ in range(12):
        position = await api.services.run_sync(_step, app, task_id, rng) or position
        assert await api.services.runner.wait_for(position, 10)
        recorded.append((await _head(api), await _live(api, task_id, execution_id)))
    distinct = {repr(live) for _, live in recorded}
    assert len(distinct) >= 4  # the run changed what the endpoints answer
    for position, live in rng.sample(recorded, 8):
        for key, path in (
            ("detail", f"{TASK}/{task_id}"),
            ("agents", f"{TASK}/{task_id}/agents"),
            ("history", f"{TASK}/{task_id}/history"),
            ("execution", f"/api/v1/deduction/agent-execution/{execution_id}"),
        ):
            status, body = await api.call("GET", path, params={"as_of_position": position})
            assert status == 200, body
            # the queue position is computed when read, not rebuilt: as_of answers leave it null
            assert _settled(body["data"]) == _settled(live[key]), (key, position)
    async with api.services.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM as_of_snapshot")
        assert (await cur.fetchone() or [0])[0] > 0  # the answers above came from snapshots


async def test_as_of_reports_the_position_and_a_moment_before_the_task_is_404(
    task: dict[str, Any], catalog: Api
) -> None:
    """as_of answers say which position they reflect; before the task existed it is 404.
    A moment covers the events stamped at or before it (the last one here is an agent's)."""
    url = catalog.base + f"{TASK}/{task['id']}"
    moment = max(a["update_at"] for a in task["agent_executions"])
    async with catalog.session.get(url, params={"as_of": moment}) as r:
        body = await r.json()
        assert r.status == 200
        assert int(r.headers["X-As-Of-Position"]) > 0
    assert _settled(body["data"]) == _settled(task)
    status, body = await catalog.call(
        "GET", f"{TASK}/{task['id']}", params={"as_of": "2000-01-01T00:00:00Z"}
    )
    assert status == 404, body


async def test_task_events_are_paged_filtered_and_logs_summarised(
    task: dict[str, Any], catalog: Api
) -> None:
    """The task's events come oldest first in pages; log batches are summarised unless
    include=logs; type and aggregate filters narrow them."""
    execution_id = task["agent_executions"][0]["id"]
    await save_logs(catalog, execution_id, task["id"], [log_lines(3), log_lines(2, start=3)])
    events, after = [], 0
    while True:
        status, body = await catalog.call(
            "GET", f"{TASK}/{task['id']}/events", params={"after": after, "limit": 2}
        )
        assert status == 200, body
        events += body["data"]["events"]
        after = body["data"]["next_cursor"]
        if after is None:
            break
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = [e["type"] for e in events]
    assert types[0] == "DeductionTask.Created" and types.count("ExecutionLog.LogsReceived") == 2
    assert events[0]["operator"] == "anonymous" and events[0]["schema_version"] == 1
    batch = next(e for e in events if e["type"] == "ExecutionLog.LogsReceived")
    assert batch["fields"]["line_count"] == 3 and "lines" not in batch["fields"]
    status, body = await catalog.call(
        "GET",
        f"{TASK}/{task['id']}/events",
        params={"type": "ExecutionLog.LogsReceived", "include": "logs"},
    )
    assert [len(e["fields"]["lines"]) for e in body["data"]["events"]] == [3, 2]
    status, body = await catalog.call(
        "GET", f"{TASK}/{task['id']}/events", params={"aggregate_type": "AgentExecution"}
    )
    assert {e["aggregate_type"] for e in body["data"]["events"]} == {"AgentExecution"}
    status, body = await catalog.call("GET", "/api/v1/events", params={"after": positions[-2]})
    assert [e["position"] for e in body["data"]["events"]] == positions[-1:]
    status, body = await catalog.call(
        "GET", f"{TASK}/{task['id']}/events", params={"type": "Nope.Happened"}
    )
    assert status == 422 and "Nope.Happened" in body["message"]


async def test_history_pages_by_position_and_filters(task: dict[str, Any], catalog: Api) -> None:
    """History entries carry their event's position; after/limit page them and filters apply."""
    await catalog.call("POST", f"{TASK}/{task['id']}/stop", headers={"X-Operator": "carol"})
    _, full = await catalog.call("GET", f"{TASK}/{task['id']}/history")
    entries = full["data"]
    assert [e["position"] for e in entries] == [e["id"] for e in entries]
    _, page = await catalog.call(
        "GET", f"{TASK}/{task['id']}/history", params={"after": entries[0]["position"], "limit": 1}
    )
    assert page["data"] == entries[1:2]
    _, carol = await catalog.call(
        "GET", f"{TASK}/{task['id']}/history", params={"operator": "carol"}
    )
    assert carol["data"] and {e["operator"] for e in carol["data"]} == {"carol"}
    _, stops = await catalog.call(
        "GET", f"{TASK}/{task['id']}/history", params={"change_type": "stop_request"}
    )
    assert [e["change_type"] for e in stops["data"]] == ["stop_request"]


async def test_the_export_streams_a_file_that_verifies(task: dict[str, Any], catalog: Api) -> None:
    """GET .../export streams the task's chained events and a manifest that verify accepts;
    one changed byte makes it fail."""
    async with await AsyncConnection.connect(
        catalog.services.database_url, autocommit=True
    ) as conn:
        await extend_chain(conn)
    async with catalog.session.get(catalog.base + f"{TASK}/{task['id']}/export") as r:
        assert r.status == 200
        data = await r.read()
    lines = data.splitlines()
    verdict = verify_file(lines)
    assert verdict.intact, verdict.problem
    assert verdict.events == len(lines) - 1 >= 3
    edited = [lines[0], lines[1].replace(b'"anonymous"', b'"mallory"'), *lines[2:]]
    assert not verify_file(edited).intact
    assert "edited" in (verify_file(edited).problem or "")
    assert "deleted" in (verify_file(lines[:1] + lines[2:]).problem or "")
    assert "reordered" in (verify_file([lines[1], lines[0], *lines[2:]]).problem or "")
