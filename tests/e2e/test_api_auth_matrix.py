"""Every route of the app × every kind of caller gets exactly the answer its rule says."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import msgspec
import pytest
from litestar.datastructures import State

from deduction.adapters.http.app import _litestar
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.config import Settings
from tests.support.api import Api, create_task_id
from tests.support.auth import bearer, issue, revoke, secured_api
from tests.support.plan import plan_task

TASK = "/api/v1/deduction/task"
EXEC = "/api/v1/deduction/agent-execution"
CATALOG = "/api/v1/catalog"
AS_OF = "?as_of_position=1000000"

# The rule of each route, written out here (not read from the app): a route the app serves and
# this table does not name fails the test, and so does a rule that differs.
RULES: dict[tuple[str, str], str] = {
    ("GET", "/health"): "public",
    ("GET", "/ready"): "public",
    ("GET", "/metrics"): "public",
    ("POST", f"{TASK}/create"): "operator",
    ("GET", f"{TASK}/list"): "viewer",
    ("GET", f"{TASK}/{{task_id:str}}"): "viewer",
    ("POST", f"{TASK}/{{task_id:str}}/stop"): "operator",
    ("PUT", f"{TASK}/{{task_id:str}}/update"): "operator",
    ("POST", f"{TASK}/{{task_id:str}}/priority"): "operator",
    ("GET", f"{EXEC}/{{execution_id:str}}"): "viewer",
    ("GET", f"{TASK}/{{task_id:str}}/agents"): "viewer",
    ("GET", f"{EXEC}/{{execution_id:str}}/logs"): "viewer",
    ("GET", f"{TASK}/{{task_id:str}}/logs"): "viewer",
    ("GET", f"{TASK}/{{task_id:str}}/history"): "viewer",
    ("GET", "/api/v1/events"): "auditor",
    ("GET", f"{TASK}/{{task_id:str}}/export"): "auditor",
    ("GET", f"{TASK}/{{task_id:str}}/events"): "auditor",
    ("POST", f"{CATALOG}/agent-metas"): "admin",
    ("GET", f"{CATALOG}/agent-metas"): "viewer",
    ("GET", f"{CATALOG}/agent-metas/{{entry_id:str}}"): "viewer",
    ("POST", f"{CATALOG}/schemes"): "admin",
    ("GET", f"{CATALOG}/schemes"): "viewer",
    ("GET", f"{CATALOG}/schemes/{{entry_id:str}}"): "viewer",
    ("POST", f"{CATALOG}/env-instances"): "admin",
    ("GET", f"{CATALOG}/env-instances"): "viewer",
    ("GET", f"{CATALOG}/env-instances/{{entry_id:str}}"): "viewer",
    ("GET", "/api/v1/deduction/engine/status"): "viewer",
    ("GET", "/api/v1/deduction/stream"): "viewer",
    ("GET", f"{TASK}/{{task_id:str}}/stream"): "viewer",
    ("WS", f"{TASK}/{{task_id:str}}/ws"): "viewer",
}
# Reads that, asked as of a moment, are the auditors'.
AS_OF_RULES = {
    ("GET", f"{TASK}/{{task_id:str}}"),
    ("GET", f"{TASK}/{{task_id:str}}/history"),
    ("GET", f"{TASK}/{{task_id:str}}/agents"),
    ("GET", f"{EXEC}/{{execution_id:str}}"),
}
ROLES = ("viewer", "operator", "auditor", "admin")
REFUSED = ("no token", "bad token", "unknown token", "expired token", "revoked token")


def served_routes(with_param: str | None = None) -> set[tuple[str, str]]:
    """(method, path) of every handler the app serves, but OPTIONS and the OpenAPI pages;
    with `with_param`, only those whose handler takes that parameter."""
    app = _litestar(State(), Settings())
    out = set()
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        for handler in getattr(route, "route_handlers", None) or [route.route_handler]:  # type: ignore[union-attr]
            methods = getattr(handler, "http_methods", None) or {"WS"}
            if with_param and with_param not in handler.parsed_fn_signature.parameters:
                continue
            out |= {(m, route.path) for m in methods if m != "OPTIONS"}
    return out


def allowed(role: str, rule: str) -> bool:
    return (
        rule == "public" or role == "admin" or role == rule or (rule == "viewer" and role in ROLES)
    )


@dataclass
class World:
    api: Api
    tokens: dict[str, str | None]
    ids: dict[str, int]
    counter: itertools.count[int]


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    async with secured_api(db_url, stream_max_age=0.5) as api:
        s = api.services
        assert await s.runner.wait_for(await s.run_sync(load_catalog, s.app, demo_catalog()), 10)
        admin = await issue(s, "root", "admin")
        tokens: dict[str, str | None] = {
            role: await issue(s, f"the-{role}", role) for role in ROLES
        }
        tokens["no token"] = None
        tokens["bad token"] = "not-a-token-at-all"
        tokens["unknown token"] = "ddt_0123456789ab_" + "A" * 43
        tokens["expired token"] = await issue(s, "late", "admin", lifetime=timedelta(hours=1),
                                              ago=7200)  # fmt: skip
        revoked = await issue(s, "gone", "admin")
        await revoke(s, revoked)
        tokens["revoked token"] = revoked
        api.session.headers.update(bearer(admin))
        updated = await create_task_id(api, "matrix-updated")
        stopped = await create_task_id(api, "matrix-stopped")
        del api.session.headers["Authorization"]
        ids = {"task": updated, "stopped": stopped}
        status, body = await api.call("GET", f"{TASK}/{updated}", headers=bearer(admin))
        assert status == 200, body
        ids["execution"] = body["data"]["agent_executions"][0]["id"]
        yield World(api, tokens, ids, itertools.count(1))


Request = tuple[str, Any, int]  # url, json body, the status an allowed caller gets


def request_for(method: str, path: str, w: World) -> Callable[[], Request]:
    """A request to the route that succeeds for a caller allowed to make it."""
    t, e, stopped = w.ids["task"], w.ids["execution"], w.ids["stopped"]
    url = (path.replace("{task_id:str}", str(t)).replace("{execution_id:str}", str(e))
           .replace("{entry_id:str}", "0"))  # fmt: skip
    entry = {"agent-metas": 10001, "schemes": 1234567890, "env-instances": 9876543210}
    for kind, entry_id in entry.items():
        url = url.replace(f"{kind}/0", f"{kind}/{entry_id}")

    def make() -> Request:
        n = next(w.counter)
        if path.endswith("/create"):
            return url, plan_task(name=f"matrix-{n}"), 200
        if path.endswith("/stop"):
            return url.replace(f"/{t}/", f"/{stopped}/"), None, 200
        if path.endswith("/priority"):  # the task waits for admission (no worker runs here)
            return url, {"priority": "high"}, 200
        if path.endswith("/update"):
            change = {"agent_execution_id": e, "params": {"round": n}}
            return url, {"agent_configs": [change]}, 200
        if method == "POST" and path.endswith("agent-metas"):
            return url, {"id": 50000 + n, "name": f"m{n}", "load": "agent.load"}, 201
        if method == "POST":
            return url, {"id": 50000 + n, "name": f"c{n}", "config": {}}, 201
        return url, None, 200

    return make


async def call(w: World, method: str, url: str, json: Any, token: str | None) -> tuple[int, str]:
    headers = bearer(token) if token else {}
    if method == "WS":
        try:
            async with w.api.session.ws_connect(w.api.base + url, headers=headers):
                return 200, ""
        except aiohttp.WSServerHandshakeError as e:
            return e.status, ""
    async with w.api.session.request(method, w.api.base + url, json=json, headers=headers) as r:
        if r.status == 200 and r.content_type != "application/json":
            return r.status, ""  # a stream or an export: the answer has started
        body = msgspec.json.decode(await r.read())
        return r.status, body.get("message", "")


async def test_every_route_has_a_rule_and_every_rule_is_a_route() -> None:
    """A route added without a rule here fails, and so does a rule for a route that is gone."""
    served = served_routes()
    assert served - RULES.keys() == set(), "routes without an access rule in this test"
    assert RULES.keys() - served == set(), "rules for routes the app does not serve"
    assert served_routes(with_param="as_of") == AS_OF_RULES, "as-of reads are the auditors'"


async def test_every_route_answers_every_caller_as_its_rule_says(world: World) -> None:
    """Each role gets the success status where its rule allows and a 403 naming the missing
    role where not; no, bad, unknown, expired and revoked tokens get 401 on every guarded
    route; as-of reads need the auditor role. Public probes answer everyone."""
    checks: list[tuple[str, str, str, str]] = []
    for (method, path), rule in sorted(RULES.items()):
        variants = [(path, rule, "")]
        if (method, path) in AS_OF_RULES:
            variants.append((path, "auditor", AS_OF))
        for template, need, query in variants:
            make = request_for(method, template, world)
            for caller, token in world.tokens.items():
                url, body, ok = make()
                status, message = await call(world, method, url + query, body, token)
                if method == "GET" and template.endswith("/ready"):
                    ok = status if status in (200, 503) else 200
                if method == "WS":
                    expected = 200 if caller in ROLES and allowed(caller, need) else 403
                elif need == "public":
                    expected = ok
                elif caller in REFUSED:
                    expected = 401
                else:
                    expected = ok if allowed(caller, need) else 403
                if status != expected:
                    checks.append((f"{method} {url}{query}", caller, f"{status}", f"{expected}"))
                elif status == 403 and method != "WS":
                    assert f"the {need} role" in message, (method, url, caller, message)
    assert checks == [], "route, caller, got, expected"
