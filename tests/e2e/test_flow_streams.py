"""Streams of a real run (in-process worker, reference Engine): in order, exactly once
across reconnects, and served by a second API process over the same database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deduction.application.services import Services
from tests.support.api import Api, create_task_id, free_port, working_services
from tests.support.engine import LiveEngine
from tests.support.streams import (
    Message,
    assert_everything,
    assert_in_order_once,
    read_sse,
    read_ws,
)
from tests.support.waits import wait_until

BIN = Path(sys.executable).with_name("deduction")


@pytest.fixture
async def services(db_url: str, live: LiveEngine) -> AsyncIterator[Services]:
    """The API's services with the in-process worker sweeping every 0.1 s."""
    async with working_services(db_url, live.url) as s:
        yield s


async def test_every_change_of_the_plans_example_arrives_in_order(
    api: Api, live: LiveEngine
) -> None:
    task_id = await create_task_id(api)
    sse, ws = await asyncio.gather(read_sse(api, task_id), read_ws(api, task_id))
    await assert_everything(api, task_id, sse)
    await assert_everything(api, task_id, ws)
    statuses = [m.data["task"]["status"] for m in sse if m.type == "task"]
    assert statuses[0] == "pending" and statuses[-1] == "completed"
    assert any(m.type == "logs" for m in sse)


async def _read_with_disconnects(api: Api, task_id: int, rng: random.Random) -> list[Message]:
    """A client that drops its connection after a few messages or a random moment, and
    resumes from the last id it got, over SSE or WebSocket in turn."""
    got: list[Message] = []
    reconnects = 0
    while not got or got[-1].type != "end":
        cursor = got[-1].id if got else None
        read = read_sse if reconnects % 2 == 0 else read_ws
        reading = read(api, task_id, cursor, limit=rng.randint(1, 8), out=got)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reading, rng.uniform(0.02, 0.4))
        reconnects += 1
    assert reconnects > 3
    return got


@pytest.mark.slow
@pytest.mark.parametrize("live", [{"duration_min": 2, "duration_max": 3}], indirect=True)
async def test_a_client_resuming_at_random_points_gets_every_message_once(
    api: Api, live: LiveEngine
) -> None:
    task_id = await create_task_id(api)
    clients = [_read_with_disconnects(api, task_id, random.Random(seed)) for seed in (1, 2, 3)]
    for got in await asyncio.gather(*clients):
        assert_in_order_once(got)
        await assert_everything(api, task_id, got)


@pytest.fixture
def second_api(db_url: str, live: LiveEngine, tmp_path: Path) -> Iterator[str]:
    """`deduction serve` in its own process over the same database; it makes no changes."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "REDIS_URL")}
    env.update(DATABASE_URL=db_url, API_PORT=str(port), ENGINE_URL=live.url,
               TASK_POLL_ENABLED="false", LOG_LEVEL="WARNING")  # fmt: skip
    out = (tmp_path / "api2.log").open("wb")
    proc = subprocess.Popen([str(BIN), "serve"], env=env, stdout=out, stderr=out)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.slow
async def test_a_second_api_process_streams_the_changes_the_first_one_makes(
    api: Api, second_api: str
) -> None:
    other = Api(second_api, api.session, api.services)

    async def up() -> bool:
        with contextlib.suppress(OSError):
            return (await other.call("GET", "/ready"))[0] == 200
        return False

    await wait_until(up, timeout=30, interval=0.1)
    task_id = await create_task_id(api)  # the first process creates and runs it
    readers = [read_sse(other, task_id) for _ in range(3)]
    readers += [read_ws(other, task_id) for _ in range(2)]
    for got in await asyncio.gather(*readers):
        await assert_everything(api, task_id, got)
