"""Bad input of every kind gets a clear 4xx envelope and changes nothing; only bugs get 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import TASK, Api, create_task, event_head
from tests.support.plan import plan_task

CREATE = f"{TASK}/create"


def with_agent(**changes: Any) -> dict[str, Any]:
    body = plan_task()
    body["agent_configs"][0].update(changes)
    return body


async def post_raw(api: Api, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    return await api.call("POST", path, data=data, headers={"Content-Type": "application/json"})


@pytest.fixture
async def baseline(catalog: Api) -> int:
    """The event store position before the bad requests of a test."""
    return await event_head(catalog)


async def assert_unchanged(api: Api, baseline: int) -> None:
    assert await event_head(api) == baseline
    _, listing = await api.call("GET", f"{TASK}/list")
    assert listing["data"]["total"] == 0


async def test_malformed_json_is_400(catalog: Api, baseline: int) -> None:
    """Bodies that are not JSON, or cut short, or missing: 400 saying so."""
    for raw in [
        b"{",
        b'{"name": "x",',
        b"not json",
        b"\xff\xfe",
        b'{"name": "\\ud800"}',
        b'{"name": "\xff\xfe", "scheme_id": 1}',
    ]:
        status, body = await post_raw(catalog, CREATE, raw)
        assert status == 400, raw
        assert body["code"] == 400
        assert body["message"].startswith("request body is not valid JSON: "), raw
    status, body = await post_raw(catalog, CREATE, b"")
    assert (status, body["message"]) == (400, "request body is missing: send a JSON object")
    await assert_unchanged(catalog, baseline)


async def test_json_that_is_not_an_object_is_422(catalog: Api, baseline: int) -> None:
    """An array, a string or null where an object is expected: 422."""
    for raw, got in [(b"[]", "an array"), (b'"task"', "a string"), (b"42", "an integer")]:
        status, body = await post_raw(catalog, CREATE, raw)
        assert (status, body["message"]) == (422, f"request body must be an object, not {got}")
    await assert_unchanged(catalog, baseline)


WRONG_TYPES = [
    (
        with_agent(agent_meta_id="10001"),
        "agent_configs[0].agent_meta_id must be an integer, not a string",
    ),
    (
        with_agent(agent_meta_id=10001.5),
        "agent_configs[0].agent_meta_id must be an integer, not a number",
    ),
    (
        with_agent(agent_meta_id=True),
        "agent_configs[0].agent_meta_id must be an integer, not a boolean",
    ),
    (plan_task(scheme_id=1.5), "scheme_id must be an integer, not a number"),
    (plan_task(name=7), "name must be a string, not an integer"),
    (plan_task(description=["a"]), "description must be a string or null, not an array"),
    (with_agent(params=["a"]), "agent_configs[0].params must be an object, not an array"),
    (plan_task(agent_configs={}), "agent_configs must be an array, not an object"),
]


async def test_wrong_types_are_422_naming_the_field(catalog: Api, baseline: int) -> None:
    """A value of the wrong JSON type is refused, even when it could be converted."""
    for payload, message in WRONG_TYPES:
        status, body = await catalog.call("POST", CREATE, json=payload)
        assert (status, body["message"]) == (422, message)
        field = message.split(" ")[0]
        assert body["data"]["errors"] == [{"field": field, "message": message}]
    await assert_unchanged(catalog, baseline)


async def test_unknown_and_missing_fields_are_422(catalog: Api, baseline: int) -> None:
    """Unknown fields are rejected at any depth; required ones are named when absent."""
    missing = plan_task()
    del missing["name"]
    del_side = plan_task()
    del del_side["agent_configs"][1]["side"]
    cases = [
        (plan_task(urgency="high"), "urgency is not a known field"),
        (with_agent(weight=3), "agent_configs[0].weight is not a known field"),
        (missing, "name is required"),
        (del_side, "agent_configs[1].side is required"),
    ]
    for payload, message in cases:
        status, body = await catalog.call("POST", CREATE, json=payload)
        assert (status, body["message"]) == (422, message)
    await assert_unchanged(catalog, baseline)


async def test_lengths_and_characters_are_checked(catalog: Api, baseline: int) -> None:
    """Names over 128, descriptions over 512, sides over 64, blank names, control and NUL: 422."""
    cases = [
        (plan_task(name="n" * 129), "name must have at most 128 characters"),
        (plan_task(name=""), "name must not be empty"),
        (plan_task(name="tab\there"), "name must not be blank or contain control characters"),
        (plan_task(name="   "), "name must not be blank or contain control characters"),
        (
            with_agent(side=" "),
            "agent_configs[0].side must not be blank or contain control characters",
        ),
        (plan_task(description="d" * 513), "description must have at most 512 characters"),
        (plan_task(description="nul\x00"), "description must not contain NUL characters (\\u0000)"),
        (with_agent(side="s" * 65), "agent_configs[0].side must have at most 64 characters"),
        (
            with_agent(params={"target": {"host": "a\x00b"}}),
            "agent_configs[0].params.target.host must not contain NUL characters (\\u0000)",
        ),
        (with_agent(max_retry=-1), "agent_configs[0].max_retry must be between 0 and 100"),
        (plan_task(agent_configs=[]), "agent_configs must not be empty"),
        (
            plan_task(agent_configs=plan_task()["agent_configs"] * 501),
            "agent_configs must have at most 1000 items",
        ),
    ]
    for payload, message in cases:
        status, body = await catalog.call("POST", CREATE, json=payload)
        assert (status, body["message"]) == (422, message)
    await assert_unchanged(catalog, baseline)

    longest = plan_task(name="n" * 128, description="d" * 512)
    status, _ = await catalog.call("POST", CREATE, json=longest)
    assert status == 200


async def test_deeply_nested_params_are_refused(catalog: Api, baseline: int) -> None:
    """Params nested beyond 32 levels are 422; absurd nesting is a 400, never a 500."""
    nested: Any = 1
    for _ in range(40):
        nested = {"k": nested}
    status, body = await catalog.call("POST", CREATE, json=with_agent(params=nested))
    assert status == 422 and "nested deeper than 32 levels" in body["message"]

    depth = 100_000
    absurd = b'{"name": "x", "agent_configs": [{"params": ' + b"[" * depth + b"]" * depth + b"}]}"
    status, body = await post_raw(catalog, CREATE, absurd)
    assert status == 400 and body["code"] == 400
    await assert_unchanged(catalog, baseline)


async def test_oversize_body_is_413(catalog: Api, baseline: int) -> None:
    """A body above MAX_BODY_BYTES (1 MiB by default) is refused before it is parsed."""
    payload = plan_task(description="x" * 2_000_000)
    status, body = await catalog.call("POST", CREATE, json=payload)
    assert status == 413
    assert body == {
        "code": 413,
        "message": "request body is larger than the limit of 1048576 bytes",
        "data": None,
    }
    await assert_unchanged(catalog, baseline)


BAD_QUERIES = [
    (f"{TASK}/0", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/-1", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/9007199254740992", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/99999999999999999999999999", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/abc", "task_id must be an integer, not a string"),
    (f"{TASK}/1.5", "task_id must be an integer, not a string"),
    (f"{TASK}/1%3B%20DROP%20TABLE%20deduction_task", "task_id must be an integer, not a string"),
    (f"{TASK}/0/agents", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/-7/history", "task_id must be between 1 and 9007199254740991"),
    (f"{TASK}/-7/logs", "task_id must be between 1 and 9007199254740991"),
    (
        "/api/v1/deduction/agent-execution/-5",
        "execution_id must be between 1 and 9007199254740991",
    ),
    (
        "/api/v1/deduction/agent-execution/0/logs",
        "execution_id must be between 1 and 9007199254740991",
    ),
    (
        f"{TASK}/list?status=running'%20OR%20'1'='1",
        (
            "status must be one of pending, running, completed, failed, stopped,"
            " not \"running' OR '1'='1\""
        ),
    ),
    (f"{TASK}/list?page=-1", "page must be between 1 and 9007199254740991"),
    (
        f"{TASK}/5/agents?status=paused",
        "status must be one of pending, running, completed, failed, stopped, not 'paused'",
    ),
]


async def test_bad_ids_and_enum_values_are_422(api: Api) -> None:
    """Ids outside 1..2^53-1, non-integers and unknown enum values: 422, never 404 or 500."""
    for path, message in BAD_QUERIES:
        status, body = await api.call("GET", path)
        assert (status, body["code"], body["message"]) == (422, 422, message), path


async def test_commands_with_bad_ids_change_nothing(catalog: Api, baseline: int) -> None:
    """Stop and update on impossible ids are 422 and record nothing."""
    update = {"agent_configs": [{"agent_execution_id": 0, "params": {"a": 1}}]}
    for method, path, body in [
        ("POST", f"{TASK}/-1/stop", None),
        ("POST", f"{TASK}/9007199254740992/stop", None),
        ("PUT", f"{TASK}/1/update", update),
    ]:
        status, answer = await catalog.call(method, path, json=body)
        assert status == 422, (path, answer)
    await assert_unchanged(catalog, baseline)


async def test_sql_looking_names_are_stored_verbatim(catalog: Api) -> None:
    """Text that looks like SQL is only text: stored and shown as sent, tables intact."""
    name = "x'); DROP TABLE deduction_task; --"
    task = await create_task(catalog, name=name, description="' OR 1=1 --")
    assert (task["name"], task["description"]) == (name, "' OR 1=1 --")
    _, listing = await catalog.call("GET", f"{TASK}/list")
    assert [t["name"] for t in listing["data"]["items"]] == [name]


async def test_operator_header_is_validated(catalog: Api, baseline: int) -> None:
    """X-Operator longer than 64 or not printable ASCII: 422 naming the header."""
    message = "X-Operator must be 1 to 64 printable ASCII characters"
    for operator in ["o" * 65, "bjørn"]:
        status, body = await catalog.call(
            "POST", CREATE, json=plan_task(), headers={"X-Operator": operator}
        )
        assert (status, body["message"]) == (422, message)
        assert body["data"]["errors"] == [{"field": "X-Operator", "message": message}]
    await assert_unchanged(catalog, baseline)
    longest = {"X-Operator": "o" * 64}
    status, _ = await catalog.call("POST", CREATE, json=plan_task(), headers=longest)
    assert status == 200


async def test_unknown_paths_and_methods_answer_in_the_envelope(api: Api) -> None:
    """Unknown endpoints are 404 and wrong methods 405, both as envelopes."""
    status, body = await api.call("GET", "/api/v1/deduction/nothing")
    assert (status, body["code"]) == (404, 404)
    assert body["message"] == "no endpoint at GET /api/v1/deduction/nothing"
    status, body = await api.call("DELETE", f"{TASK}/1")
    assert (status, body["code"]) == (405, 405)
    assert body["message"] == f"DELETE is not allowed on {TASK}/1; allowed: GET, OPTIONS"
    status, body = await api.call("GET", f"{TASK}/create")
    assert (status, body["code"]) == (405, 405)


async def test_options_lists_every_method_of_a_path(api: Api) -> None:
    """OPTIONS on a collection with GET and POST names both."""
    async with api.session.options(f"{api.base}/api/v1/catalog/schemes") as r:
        assert r.status == 204
        assert r.headers["Allow"] == "GET, OPTIONS, POST"
    async with api.session.options(f"{api.base}{TASK}/5") as r:
        assert r.headers["Allow"] == "GET, OPTIONS"


async def test_an_unexpected_failure_is_a_logged_500_envelope(api: Api) -> None:
    """Only a real fault (here: a read table gone) reaches the catch-all: 500, no details leaked."""
    async with api.services.pool.connection() as conn:
        await conn.execute("DROP TABLE deduction_task_history")
        await conn.execute(
            "INSERT INTO deduction_task (id, scheme_id, env_instance_id, name,"
            " scheme_snapshot, create_at, update_at, version)"
            " VALUES (1, 1, 1, 'n', '{}', now(), now(), 1)"
        )

    status, body = await api.call("GET", f"{TASK}/1/history")

    assert status == 500
    assert body == {"code": 500, "message": "internal error; it has been logged", "data": None}
