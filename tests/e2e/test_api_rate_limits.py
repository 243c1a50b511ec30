"""Per-principal rate limits, counted in Redis so that two API processes share them."""

from __future__ import annotations

from uuid import uuid4

import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from tests.support.api import TASK, event_head
from tests.support.auth import bearer, issue, secured_api
from tests.support.plan import plan_task


@pytest.mark.redis
async def test_two_api_processes_share_each_principals_read_limit(
    db_url: str, redis_url: str
) -> None:
    """Five reads a minute for alice: three on one server and two on the other use them up,
    so the sixth is a 429 with Retry-After on either; bob still reads, and alice's commands
    have a budget of their own."""
    limits = {"redis_url": redis_url, "worker_queue": f"dtest:{uuid4().hex[:10]}",
              "rate_limit_reads": 5, "rate_limit_commands": 3}  # fmt: skip
    async with secured_api(db_url, **limits) as one, secured_api(db_url, **limits) as two:
        s = one.services
        assert await s.runner.wait_for(await s.run_sync(load_catalog, s.app, demo_catalog()), 10)
        alice = await issue(s, "alice", "operator")
        bob = await issue(s, "bob", "viewer")
        assert await two.services.runner.wait_for(await event_head(one), 10)
        statuses = []
        for api in (one, one, one, two, two):
            statuses.append((await api.call("GET", f"{TASK}/list", headers=bearer(alice)))[0])
        assert statuses == [200] * 5
        for api in (one, two):
            async with api.session.get(api.base + f"{TASK}/list", headers=bearer(alice)) as r:
                body = await r.json()
                assert r.status == 429 and body["code"] == 429, body
                assert 1 <= int(r.headers["Retry-After"]) <= 60
                assert "alice may send 5 reads per minute" in body["message"]
        assert (await two.call("GET", f"{TASK}/list", headers=bearer(bob)))[0] == 200
        status, body = await two.call("POST", f"{TASK}/create", json=plan_task(),
                                      headers=bearer(alice))  # fmt: skip
        assert status == 200, body


async def test_without_redis_each_process_counts_alone(db_url: str) -> None:
    """The contrast: with no REDIS_URL the count is in each process's memory."""
    limits = {"rate_limit_reads": 3}
    async with secured_api(db_url, **limits) as one, secured_api(db_url, **limits) as two:
        alice = await issue(one.services, "alice", "viewer")
        assert await two.services.runner.wait_for(await event_head(one), 10)
        statuses = []
        for api in (one, one, one, two, two, two, one):
            statuses.append((await api.call("GET", f"{TASK}/list", headers=bearer(alice)))[0])
        assert statuses == [200] * 6 + [429]


async def test_without_authentication_nothing_is_limited(db_url: str) -> None:
    """Open mode (loopback, no auth configured) has no principals, so no limits."""
    async with secured_api(db_url, auth_mode="auto", rate_limit_reads=2) as api:
        statuses = [(await api.call("GET", f"{TASK}/list"))[0] for _ in range(4)]
    assert statuses == [200] * 4
