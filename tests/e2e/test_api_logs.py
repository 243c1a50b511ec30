"""Log queries over HTTP: minimum level, time range, order, and the after_id cursor."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import TASK, Api
from tests.support.logs import LEVEL_CYCLE, log_lines, save_logs

EXECUTION = "/api/v1/deduction/agent-execution"


@pytest.fixture
async def logged(task: dict[str, Any], catalog: Api) -> dict[str, Any]:
    """The plan's task with 30 lines for the red agent (three batches) and 10 for the blue one.

    Red line i has level LEVEL_CYCLE[i % 5] and timestamp 10:00:00 + i s.
    """
    red, blue = (a["id"] for a in task["agent_executions"])
    await save_logs(catalog, red, task["id"], [log_lines(10), log_lines(10, 10), log_lines(10, 20)])
    await save_logs(catalog, blue, task["id"], [log_lines(10, 100, ["INFO"])])
    return {"task": task["id"], "red": red, "blue": blue}


async def get_logs(api: Api, path: str) -> dict[str, Any]:
    status, body = await api.call("GET", path)
    assert status == 200, body
    return dict(body["data"])


async def test_execution_logs_are_newest_first_with_the_plans_fields(
    logged: dict[str, Any], catalog: Api
) -> None:
    """Without parameters: the 30 lines newest first, total 30, no next page."""
    data = await get_logs(catalog, f"{EXECUTION}/{logged['red']}/logs")

    assert data["total"] == 30 and data["next_cursor"] is None
    assert [line["message"] for line in data["logs"]] == [f"line {i}" for i in range(29, -1, -1)]
    newest = data["logs"][0]
    assert set(newest) == {
        "id", "agent_execution_id", "timestamp", "level", "message", "source", "extra_data",
        "create_at",
    }  # fmt: skip
    assert newest["timestamp"] == "2025-11-12T10:00:29.000000Z"
    assert (newest["level"], newest["source"], newest["extra_data"]) == (
        "CRITICAL", "network_module", {"i": 29}
    )  # fmt: skip
    assert newest["agent_execution_id"] == logged["red"]


async def test_level_is_a_minimum_severity(logged: dict[str, Any], catalog: Api) -> None:
    """level=ERROR returns ERROR and CRITICAL lines; total counts the same lines."""
    base = f"{EXECUTION}/{logged['red']}/logs"
    for level, expected in [
        ("DEBUG", set(LEVEL_CYCLE)),
        ("INFO", {"INFO", "WARNING", "ERROR", "CRITICAL"}),
        ("WARNING", {"WARNING", "ERROR", "CRITICAL"}),
        ("ERROR", {"ERROR", "CRITICAL"}),
        ("CRITICAL", {"CRITICAL"}),
    ]:
        data = await get_logs(catalog, f"{base}?level={level}&limit=100")
        assert {line["level"] for line in data["logs"]} == expected, level
        assert data["total"] == len(data["logs"]) == 6 * len(expected)
        ids = [line["id"] for line in data["logs"]]
        assert ids == sorted(ids, reverse=True)


async def test_cursor_pages_through_every_line_once_in_both_orders(
    logged: dict[str, Any], catalog: Api
) -> None:
    """Following next_cursor with limit=7 yields each line exactly once, then null."""
    base = f"{EXECUTION}/{logged['red']}/logs?limit=7"
    everything = await get_logs(catalog, f"{EXECUTION}/{logged['red']}/logs?limit=1000")
    newest_first = [line["id"] for line in everything["logs"]]

    for order, expected in [("desc", newest_first), ("asc", newest_first[::-1])]:
        seen: list[int] = []
        sizes: list[int] = []
        cursor = None
        while True:
            after = f"&after_id={cursor}" if cursor is not None else ""
            data = await get_logs(catalog, f"{base}&order={order}{after}")
            assert data["total"] == 30
            seen += [line["id"] for line in data["logs"]]
            sizes.append(len(data["logs"]))
            cursor = data["next_cursor"]
            if cursor is None:
                break
            assert cursor == seen[-1]
        assert seen == expected, order
        assert sizes == [7, 7, 7, 7, 2]


async def test_cursor_combines_with_a_level(logged: dict[str, Any], catalog: Api) -> None:
    """level=ERROR with limit=4 pages through the 12 ERROR/CRITICAL lines in three pages."""
    base = f"{EXECUTION}/{logged['red']}/logs?level=ERROR&limit=4&order=asc"
    first = await get_logs(catalog, base)
    second = await get_logs(catalog, f"{base}&after_id={first['next_cursor']}")
    third = await get_logs(catalog, f"{base}&after_id={second['next_cursor']}")

    messages = [line["message"] for page in (first, second, third) for line in page["logs"]]
    assert messages == [f"line {i}" for i in range(30) if i % 5 in (3, 4)]
    assert third["next_cursor"] is None
    assert first["total"] == second["total"] == third["total"] == 12


async def test_a_page_that_ends_exactly_at_the_last_line_has_no_cursor(
    logged: dict[str, Any], catalog: Api
) -> None:
    """limit equal to the remaining lines returns them with next_cursor null."""
    data = await get_logs(catalog, f"{EXECUTION}/{logged['red']}/logs?limit=30")
    assert len(data["logs"]) == 30 and data["next_cursor"] is None
    beyond = await get_logs(
        catalog, f"{EXECUTION}/{logged['red']}/logs?after_id={data['logs'][-1]['id']}"
    )
    assert beyond["logs"] == [] and beyond["next_cursor"] is None and beyond["total"] == 30


async def test_time_range_is_start_inclusive_end_exclusive(
    logged: dict[str, Any], catalog: Api
) -> None:
    """start_time <= timestamp < end_time, in any timezone notation; total counts the range."""
    base = f"{EXECUTION}/{logged['red']}/logs?order=asc"
    data = await get_logs(
        catalog, f"{base}&start_time=2025-11-12T10:00:05Z&end_time=2025-11-12T10:00:10Z"
    )
    assert [line["message"] for line in data["logs"]] == [f"line {i}" for i in range(5, 10)]
    assert data["total"] == 5

    shanghai = await get_logs(catalog, f"{base}&start_time=2025-11-12T18:00:25%2B08:00&level=ERROR")
    assert [line["message"] for line in shanghai["logs"]] == ["line 28", "line 29"]
    assert shanghai["total"] == 2


async def test_task_logs_gather_every_execution(logged: dict[str, Any], catalog: Api) -> None:
    """The task's logs hold both agents' lines, each naming its agent_execution_id."""
    data = await get_logs(catalog, f"{TASK}/{logged['task']}/logs?limit=1000")
    assert data["total"] == 40
    by_agent = {line["agent_execution_id"] for line in data["logs"]}
    assert by_agent == {logged["red"], logged["blue"]}

    plan_query = await get_logs(
        catalog, f"{TASK}/{logged['task']}/logs?start_time=2025-11-12T10:00:00Z&level=INFO"
    )
    assert plan_query["total"] == 10 + 24  # blue's 10 INFO lines, red's 24 at INFO or above
    assert all(line["level"] != "DEBUG" for line in plan_query["logs"])

    warnings = await get_logs(catalog, f"{TASK}/{logged['task']}/logs?level=WARNING&limit=5")
    assert warnings["total"] == 18
    assert {line["agent_execution_id"] for line in warnings["logs"]} == {logged["red"]}
    assert warnings["next_cursor"] == warnings["logs"][-1]["id"]


async def test_the_plans_execution_query(logged: dict[str, Any], catalog: Api) -> None:
    """?level=ERROR&limit=100 from the plan answers total and the matching lines."""
    data = await get_logs(catalog, f"{EXECUTION}/{logged['red']}/logs?level=ERROR&limit=100")
    assert data["total"] == 12 and len(data["logs"]) == 12


async def test_an_execution_without_logs_has_an_empty_page(
    task: dict[str, Any], catalog: Api
) -> None:
    """No lines yet: total 0, no lines, no cursor."""
    red = task["agent_executions"][0]["id"]
    data = await get_logs(catalog, f"{EXECUTION}/{red}/logs?level=ERROR")
    assert data == {"total": 0, "logs": [], "next_cursor": None}


async def test_bad_log_parameters_are_422_naming_the_parameter(
    logged: dict[str, Any], catalog: Api
) -> None:
    """Unknown levels and orders, limits out of range, bad times and cursors: 422."""
    base = f"{EXECUTION}/{logged['red']}/logs"
    hint = "must be an RFC 3339 time with a timezone, e.g. 2025-11-12T10:00:00Z"
    levels = "level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    cases = [
        ("level=VERBOSE", f"{levels}, not 'VERBOSE'"),
        ("level=error", f"{levels}, not 'error'"),
        ("order=sideways", "order must be one of desc, asc, not 'sideways'"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("after_id=0", "after_id must be between 1 and 9007199254740991"),
        ("after_id=-3", "after_id must be between 1 and 9007199254740991"),
        ("start_time=yesterday", f"start_time {hint}"),
        ("end_time=2025-13-01T00:00:00Z", f"end_time {hint}"),
        ("start_time=0.5", f"start_time {hint}"),
        ("end_time=1762941600", f"end_time {hint}"),
        ("start_time=2025-11-12", f"start_time {hint}"),
        (
            "start_time=2025-11-12T10:00:00",
            "start_time must include a timezone, e.g. 2025-11-12T10:00:00Z or +08:00",
        ),
    ]
    for query, message in cases:
        status, body = await catalog.call("GET", f"{base}?{query}")
        assert (status, body["message"]) == (422, message), query
        assert body["data"]["errors"][0]["message"] == message


async def test_an_empty_time_range_is_an_empty_page(logged: dict[str, Any], catalog: Api) -> None:
    """end_time at or before start_time is an empty range: no lines, not an error."""
    ranges = [("10:00:05", "10:00:05"), ("10:00:05", "10:00:01")]
    for base in (f"{EXECUTION}/{logged['red']}/logs", f"{TASK}/{logged['task']}/logs"):
        for start, end in ranges:
            query = f"start_time=2025-11-12T{start}Z&end_time=2025-11-12T{end}Z"
            status, body = await catalog.call("GET", f"{base}?{query}")
            assert status == 200, body
            assert body["data"] == {"total": 0, "logs": [], "next_cursor": None}


async def test_logs_of_unknown_ids_are_404(api: Api) -> None:
    """Logs of an execution or task that does not exist: 404."""
    status, body = await api.call("GET", f"{EXECUTION}/31337/logs")
    assert (status, body["message"]) == (404, "agent execution 31337 does not exist")
    status, body = await api.call("GET", f"{TASK}/31337/logs")
    assert (status, body["message"]) == (404, "task 31337 does not exist")
