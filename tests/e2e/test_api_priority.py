"""Priorities over HTTP: the queue order shown in task detail and list, and raising a priority."""

from __future__ import annotations

from typing import Any

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.bootstrap import open_services
from tests.support.api import (
    TASK,
    Api,
    create_task,
    drive_task,
    serve_api,
    settings_for,
    task_detail,
)
from tests.support.plan import plan_task
from tests.support.waits import wait_until


async def _listed(api: Api) -> dict[int, dict[str, Any]]:
    status, body = await api.call("GET", f"{TASK}/list", params={"size": 100})
    assert status == 200, body
    return {int(t["id"]): t for t in body["data"]["items"]}


async def test_queued_tasks_show_their_place_in_priority_then_creation_order(
    catalog: Api,
) -> None:
    priorities = ["low", "normal", "high", None, "high", "low"]
    ids = []
    for i, priority in enumerate(priorities):
        extra = {} if priority is None else {"priority": priority}
        ids.append((await create_task(catalog, name=f"queued-{i}", **extra))["id"])
    rank = {"low": 0, "normal": 1, "high": 2}
    expected = sorted(range(6), key=lambda i: (-rank[priorities[i] or "normal"], i))
    listed = await _listed(catalog)
    for place, i in enumerate(expected, start=1):
        detail = await task_detail(catalog, ids[i])
        assert detail["priority"] == (priorities[i] or "normal")
        assert detail["queue_position"] == place, (i, detail)
        assert listed[ids[i]]["queue_position"] == place
        assert listed[ids[i]]["priority"] == detail["priority"]


async def test_a_task_no_longer_queued_has_no_position(catalog: Api) -> None:
    first = await create_task(catalog, name="first")
    second = await create_task(catalog, name="second")
    status, body = await catalog.call("POST", f"{TASK}/{first['id']}/stop")
    assert status == 200, body
    assert (await task_detail(catalog, first["id"]))["queue_position"] is None
    assert (await task_detail(catalog, second["id"]))["queue_position"] == 1


async def test_raising_a_priority_moves_the_task_ahead_and_is_in_its_history(
    catalog: Api,
) -> None:
    ids = [(await create_task(catalog, name=f"raise-{i}"))["id"] for i in range(3)]
    last = ids[-1]
    assert (await task_detail(catalog, last))["queue_position"] == 3
    status, body = await catalog.call(
        "POST", f"{TASK}/{last}/priority", json={"priority": "high"},
        headers={"X-Operator": "alice"},
    )  # fmt: skip
    assert status == 200, body
    assert body["data"] == {"task_id": last, "priority": "high"}
    assert (await task_detail(catalog, last))["queue_position"] == 1
    assert (await task_detail(catalog, ids[0]))["queue_position"] == 2
    status, history = await catalog.call("GET", f"{TASK}/{last}/history")
    assert status == 200, history
    changes = [h for h in history["data"] if h["change_type"] == "priority_change"]
    assert len(changes) == 1, history
    assert changes[0]["operator"] == "alice"
    assert changes[0]["old_value"] == {"priority": "normal"}
    assert changes[0]["new_value"] == {"priority": "high"}


async def test_the_same_priority_again_changes_nothing(catalog: Api) -> None:
    task = await create_task(catalog, name="same", priority="high")
    status, body = await catalog.call(
        "POST", f"{TASK}/{task['id']}/priority", json={"priority": "high"}
    )
    assert status == 200, body
    status, history = await catalog.call("GET", f"{TASK}/{task['id']}/history")
    assert [h["change_type"] for h in history["data"]].count("priority_change") == 0


async def test_a_priority_cannot_be_lowered_nor_changed_once_admitted(catalog: Api) -> None:
    task = await create_task(catalog, name="lower", priority="high")
    status, body = await catalog.call(
        "POST", f"{TASK}/{task['id']}/priority", json={"priority": "low"}
    )
    assert status == 409, body
    assert "only be raised" in body["message"]
    running = await create_task(catalog, name="running")
    await drive_task(catalog, running["id"], "running")
    status, body = await catalog.call(
        "POST", f"{TASK}/{running['id']}/priority", json={"priority": "high"}
    )
    assert status == 409, body
    assert (await task_detail(catalog, running["id"]))["priority"] == "normal"


async def test_bad_priorities_are_refused_naming_the_field(catalog: Api) -> None:
    status, body = await catalog.call(
        "POST", f"{TASK}/create", json=plan_task(name="bad", priority="urgent")
    )
    assert status in (400, 422), body
    assert "priority" in body["message"]
    task = await create_task(catalog, name="good")
    for bad in ({"priority": 2}, {}, {"priority": "high", "extra": 1}):
        status, body = await catalog.call("POST", f"{TASK}/{task['id']}/priority", json=bad)
        assert status in (400, 422), (bad, body)
    status, body = await catalog.call("POST", f"{TASK}/123456/priority", json={"priority": "high"})
    assert status == 404, body


async def test_a_waiting_task_ages_ahead_of_newer_higher_ones(db_url: str) -> None:
    """QUEUE_AGING: each period waited raises the effective priority one level, up to high;
    then creation order decides."""
    async with open_services(settings_for(db_url, queue_aging=1.0)) as services:
        assert await services.runner.wait_for(
            await services.run_sync(load_catalog, services.app, demo_catalog()), 10
        )
        async with serve_api(services) as api:
            older = (await create_task(api, name="older"))["id"]
            newer = (await create_task(api, name="newer", priority="high"))["id"]

            async def aged() -> bool:
                return (await task_detail(api, older))["queue_position"] == 1

            await wait_until(aged, timeout=15, interval=0.2)
            assert (await task_detail(api, newer))["queue_position"] == 2
            assert (await task_detail(api, older))["priority"] == "normal"
