"""An Engine that restarts: a forgotten run fails its task within the grace; a kept one goes on;
run ids are never confused between runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection

from deduction.application.services import Services
from deduction.reference_engine.server import ReferenceEngine
from deduction.reference_engine.simulation import Knobs
from tests.support.api import TASK, Api, working_services
from tests.support.api import serve_api as serve
from tests.support.engine import FAST, LiveEngine
from tests.support.logs import engine_multiset, stored_multiset
from tests.support.plan import PLAN_TASK
from tests.support.waits import wait_until

GRACE = 1.0
SLOW = {**FAST, "duration_min": 3.0, "duration_max": 3.5}


pytestmark = pytest.mark.parametrize("live", [SLOW], indirect=True, ids=["slow"])


@pytest.fixture
async def restarting_api(db_url: str, live: LiveEngine) -> AsyncIterator[Api]:
    working = working_services(db_url, live.url, engine_run_missing_grace=GRACE)
    async with working as s, serve(s) as client:
        yield client


async def restart(live: LiveEngine, engine: ReferenceEngine) -> None:
    """Stop the Engine's server and serve `engine` on the same port."""
    await live.stop()
    live.engine = engine
    await live.start()


async def create(api: Api, name: str) -> int:
    status, body = await api.call("POST", f"{TASK}/create", json={**PLAN_TASK, "name": name})
    assert status == 200, body
    return int(body["data"]["task_id"])


async def detail(api: Api, task_id: int) -> dict[str, Any]:
    status, body = await api.call("GET", f"{TASK}/{task_id}")
    assert status == 200, body
    return dict(body["data"])


ENDED = ("completed", "failed", "stopped")


async def in_status(api: Api, task_id: int, *wanted: str) -> dict[str, Any]:
    """The task's detail once it is in one of `wanted` (and, for an end, so are its agents)."""

    async def probe() -> dict[str, Any] | None:
        task = await detail(api, task_id)
        agents_done = all(a["status"] in ENDED for a in task["agent_executions"])
        return task if task["status"] in wanted and (wanted != ENDED or agents_done) else None

    return await wait_until(probe, timeout=20)


async def history(api: Api, task_id: int) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"{TASK}/{task_id}/history")
    assert status == 200, body
    return list(body["data"])


async def stored_lines(services: Services, task: dict[str, Any]) -> Counter[str]:
    total: Counter[str] = Counter()
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        for agent in task["agent_executions"]:
            total += await stored_multiset(conn, agent["id"])
    return total


async def test_a_run_the_restarted_engine_forgot_fails_its_task_within_the_grace(
    restarting_api: Api, live: LiveEngine
) -> None:
    """The Engine comes back without its runs: detail and history say so, and the task and
    its agents end failed with the Engine's message once the grace has passed."""
    task_id = await create(restarting_api, "forgotten")
    task = await in_status(restarting_api, task_id, "running")
    await restart(live, ReferenceEngine(Knobs(**SLOW)))

    def missing(row: dict[str, Any]) -> bool:
        return "does not know run" in row["change_description"]

    rows = await wait_until(lambda: _matching(restarting_api, task_id, missing), timeout=10)
    assert task["engine_task_id"] in rows[0]["change_description"]
    ended = await in_status(restarting_api, task_id, *ENDED)
    assert ended["status"] == "failed"
    assert f"the Engine does not know run {task['engine_task_id']}" in ended["error_message"]
    assert "unknown task" in ended["error_message"]  # the Engine's own words
    assert {a["status"] for a in ended["agent_executions"]} == {"failed"}
    since = datetime.fromisoformat(rows[0]["new_value"]["run_missing_since"])
    assert datetime.fromisoformat(ended["end_time"]) - since >= timedelta(seconds=GRACE)


async def _matching(api: Api, task_id: int, keep: Any) -> list[dict[str, Any]] | None:
    return [row for row in await history(api, task_id) if keep(row)] or None


async def test_a_run_kept_on_disk_carries_on_after_the_restart(
    restarting_api: Api, live: LiveEngine, tmp_path: Path
) -> None:
    """With its state on disk, the restarted Engine knows the run: the task completes and
    every line the Engine emitted is stored once."""
    await restart(live, ReferenceEngine(Knobs(**SLOW), tmp_path))
    task_id = await create(restarting_api, "kept")
    await in_status(restarting_api, task_id, "running")
    live.engine.journal.close()  # type: ignore[union-attr]
    await restart(live, ReferenceEngine(Knobs(**SLOW), tmp_path))
    assert live.engine.restored == 1
    task = await in_status(restarting_api, task_id, *ENDED)
    assert task["status"] == "completed"
    assert not any("does not know" in r["change_description"]
                   for r in await history(restarting_api, task_id))  # fmt: skip

    async def all_stored() -> bool:
        emitted = Counter[str]()
        for lines in live.emitted(task["engine_task_id"]).values():
            emitted += engine_multiset(lines)
        return await stored_lines(restarting_api.services, task) == emitted

    assert await wait_until(all_stored, timeout=10)


async def test_a_new_run_is_never_confused_with_a_forgotten_one(
    restarting_api: Api, live: LiveEngine
) -> None:
    """After a restart the next task gets a new run id, completes on its own lines, and the
    forgotten task never takes a line or a status from it."""
    old_id = await create(restarting_api, "old")
    old = await in_status(restarting_api, old_id, "running")
    before = live.emitted(old["engine_task_id"])
    await restart(live, ReferenceEngine(Knobs(**SLOW)))
    new_id = await create(restarting_api, "new")
    new = await in_status(restarting_api, new_id, "running")
    assert new["engine_task_id"] != old["engine_task_id"]
    old = await in_status(restarting_api, old_id, *ENDED)
    assert old["status"] == "failed"
    new = await in_status(restarting_api, new_id, *ENDED)
    assert new["status"] == "completed"
    engine_ids = {a["engine_agent_id"] for a in new["agent_executions"]}
    assert engine_ids.isdisjoint(a["engine_agent_id"] for a in old["agent_executions"])
    emitted_before = Counter[str]()
    for lines in before.values():
        emitted_before += engine_multiset(lines)
    assert not (await stored_lines(restarting_api.services, old) - emitted_before)


async def test_a_run_answering_with_other_agents_is_treated_as_forgotten(
    restarting_api: Api, live: LiveEngine
) -> None:
    """An Engine that hands our run id to a run of three agents (ours has two): its reports
    are not applied, and the task fails as one whose run was lost."""
    task_id = await create(restarting_api, "reused-id")

    async def paired() -> dict[str, Any] | None:
        task = await detail(restarting_api, task_id)
        return task if all(a["engine_agent_id"] for a in task["agent_executions"]) else None

    task = await wait_until(paired, timeout=10)
    fresh = ReferenceEngine(Knobs(**{**SLOW, "duration_min": 60, "duration_max": 60}))
    three = {"agents": [{"agent_name": f"x{i}", "params": {}} for i in range(3)]}
    fresh.sim.submit(three, None, task["engine_task_id"])
    await restart(live, fresh)
    ended = await in_status(restarting_api, task_id, *ENDED)
    assert ended["status"] == "failed"
    assert "3 agents for 2 submitted" in ended["error_message"]
    before = [a["engine_agent_id"] for a in task["agent_executions"]]
    assert [a["engine_agent_id"] for a in ended["agent_executions"]] == before
    assert all(a["progress"] < 100 for a in ended["agent_executions"])
