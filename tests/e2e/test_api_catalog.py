"""The catalog over HTTP: register agent metas, schemes and env instances, then use them."""

from __future__ import annotations

import re

from tests.support.api import TASK, Api, event_head
from tests.support.plan import plan_task

CATALOG = "/api/v1/catalog"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def test_registering_an_agent_meta_answers_201_with_the_entry(api: Api) -> None:
    """POST creates under the caller's id; GET by id and the list show the same entry."""
    meta = {"id": 20001, "name": "ScoutAgent", "load": "scout_v2", "description": "recon"}

    status, body = await api.call(
        "POST", f"{CATALOG}/agent-metas", json=meta, headers={"X-Operator": "admin"}
    )

    assert (status, body["code"], body["message"]) == (201, 201, "success")
    entry = body["data"]
    assert {k: entry[k] for k in meta} == meta
    assert RFC3339_Z.match(entry["create_at"])
    status, one = await api.call("GET", f"{CATALOG}/agent-metas/20001")
    assert (status, one["data"]) == (200, entry)
    _, listing = await api.call("GET", f"{CATALOG}/agent-metas")
    assert listing["data"] == {"total": 1, "page": 1, "size": 20, "items": [entry]}


async def test_schemes_and_env_instances_keep_their_config(api: Api) -> None:
    """A scheme's and an env instance's config come back as sent; config defaults to {}."""
    scheme = {"id": 7, "name": "night-raid", "config": {"rounds": 3, "fog": True}}
    env = {"id": 8, "name": "lab"}

    status, created_scheme = await api.call("POST", f"{CATALOG}/schemes", json=scheme)
    assert status == 201
    status, created_env = await api.call("POST", f"{CATALOG}/env-instances", json=env)
    assert status == 201

    assert created_scheme["data"]["config"] == {"rounds": 3, "fog": True}
    assert created_env["data"]["config"] == {}
    _, got = await api.call("GET", f"{CATALOG}/env-instances/8")
    assert got["data"]["name"] == "lab"


async def test_a_taken_id_is_409_and_the_first_entry_stays(api: Api) -> None:
    """Registering an id twice answers 409; the original entry is unchanged."""
    first = {"id": 5, "name": "alpha", "config": {"v": 1}}
    await api.call("POST", f"{CATALOG}/schemes", json=first)

    status, body = await api.call("POST", f"{CATALOG}/schemes", json={**first, "name": "beta"})

    assert (status, body["message"]) == (409, "scheme 5 already exists")
    _, got = await api.call("GET", f"{CATALOG}/schemes/5")
    assert got["data"]["name"] == "alpha"


async def test_unknown_entries_are_404(api: Api) -> None:
    """GET of an id nobody registered answers 404 for each kind."""
    for kind, words in [
        ("agent-metas", "agent meta"),
        ("schemes", "scheme"),
        ("env-instances", "env instance"),
    ]:
        status, body = await api.call("GET", f"{CATALOG}/{kind}/404")
        assert (status, body["message"]) == (404, f"{words} 404 does not exist")


async def test_catalog_input_is_validated_and_bad_input_changes_nothing(api: Api) -> None:
    """Names beyond the table's width, bad ids, unknown fields and NUL in config: 422."""
    before = await event_head(api)
    meta = {"id": 1, "name": "n", "load": "l"}
    cases = [
        ("agent-metas", {**meta, "name": "n" * 65}, "name must have at most 64 characters"),
        ("agent-metas", {**meta, "load": "l" * 129}, "load must have at most 128 characters"),
        ("agent-metas", {**meta, "id": 0}, "id must be between 1 and 9007199254740991"),
        ("agent-metas", {**meta, "id": "1"}, "id must be an integer, not a string"),
        ("schemes", {"id": 1, "name": "n" * 129}, "name must have at most 128 characters"),
        ("schemes", {"id": 1, "name": "n", "config": []}, "config must be an object, not an array"),
        ("schemes", {"id": 1, "name": "n", "owner": "me"}, "owner is not a known field"),
        (
            "env-instances",
            {"id": 1, "name": "n", "config": {"k": "\x00"}},
            "config.k must not contain NUL characters (\\u0000)",
        ),
        ("env-instances", {"name": "n"}, "id is required"),
    ]
    for kind, payload, message in cases:
        status, body = await api.call("POST", f"{CATALOG}/{kind}", json=payload)
        assert (status, body["message"]) == (422, message), payload
    assert await event_head(api) == before


async def test_lists_page_in_id_order(api: Api) -> None:
    """Entries are listed by id; page and size bound the items, total counts them all."""
    for ident in (30, 10, 20):
        await api.call("POST", f"{CATALOG}/env-instances", json={"id": ident, "name": f"e{ident}"})

    _, first = await api.call("GET", f"{CATALOG}/env-instances?size=2")
    _, second = await api.call("GET", f"{CATALOG}/env-instances?size=2&page=2")
    status, bad = await api.call("GET", f"{CATALOG}/env-instances?size=500")

    assert [e["id"] for e in first["data"]["items"]] == [10, 20]
    assert [e["id"] for e in second["data"]["items"]] == [30]
    assert first["data"]["total"] == second["data"]["total"] == 3
    assert (status, bad["message"]) == (422, "size must be between 1 and 100")


async def test_registered_entries_are_usable_by_a_new_task(api: Api) -> None:
    """A task made from freshly registered entries copies their names and snapshot."""
    scout = {"id": 3, "name": "Scout", "load": "scout"}
    await api.call("POST", f"{CATALOG}/agent-metas", json=scout)
    drill = {"id": 4, "name": "drill", "config": {"r": 1}}
    await api.call("POST", f"{CATALOG}/schemes", json=drill)
    await api.call("POST", f"{CATALOG}/env-instances", json={"id": 6, "name": "lab"})
    payload = plan_task(scheme_id=4, env_instance_id=6)
    payload["agent_configs"] = [{"agent_meta_id": 3, "side": "red", "params": {}}]

    status, created = await api.call("POST", f"{TASK}/create", json=payload)

    assert status == 200
    _, detail = await api.call("GET", f"{TASK}/{created['data']['task_id']}")
    assert detail["data"]["scheme_snapshot"] == {"id": 4, "name": "drill", "config": {"r": 1}}
    agent = detail["data"]["agent_executions"][0]
    assert (agent["agent_name"], agent["agent_load"]) == ("Scout", "scout")
