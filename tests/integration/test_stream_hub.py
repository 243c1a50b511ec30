"""The stream hub on a real database: a subscriber that stops reading is told where to
resume and dropped, and resuming there loses and repeats nothing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from deduction.adapters.http.stream_hub import StreamHub, StreamsFullError
from deduction.adapters.http.stream_messages import Frame, parse_token
from deduction.application.services import Services
from deduction.domain import ExecutionLog
from deduction.projections.changes import PostgresChangeView
from tests.support.logs import append_logs, log_lines
from tests.support.plan import create_task
from tests.support.waits import wait_until

QUEUE = 4


def reached(hub: StreamHub, position: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return hub.fetched >= position

    return probe


@pytest.fixture
async def hub(services: Services) -> AsyncIterator[StreamHub]:
    hub = StreamHub(services.database_url, PostgresChangeView(services.pool), 2, QUEUE)
    await hub.start()
    yield hub
    await hub.stop()


async def _frames(hub: StreamHub, task_id: int, after: tuple[int, int]) -> list[Frame]:
    """Everything a fresh subscriber gets after `after` up to the hub's current position."""
    sub, got = hub.open(task_id, 0, None), []
    follow = hub.follow(sub, after, heartbeat=0.2, max_age=30)
    async for batch in follow:
        if batch is None:
            break
        got += batch
    await follow.aclose()
    hub.close(sub)
    return got


async def test_a_subscriber_that_stops_reading_is_told_where_to_resume(
    services: Services, hub: StreamHub
) -> None:
    app = services.app
    task_id = await services.run_sync(create_task, app)
    execution_id = app.get_task(task_id).execution_ids[0]
    head = await services.run_sync(app.recorder.max_notification_id)
    await wait_until(reached(hub, head), timeout=10)
    start = (hub.fetched, 9)
    sub = hub.open(task_id, 0, None)
    follow = hub.follow(sub, start, heartbeat=30, max_age=60)
    first = asyncio.create_task(anext(follow))  # joins, then waits for the first live message
    await asyncio.sleep(0.2)
    batches = [log_lines(3, start=3 * i) for i in range(10)]
    position = await services.run_sync(append_logs, app, execution_id, task_id, batches)
    await wait_until(reached(hub, position), timeout=10)

    got = await first
    assert got is not None
    async for batch in follow:
        assert batch is not None
        got += batch
    hub.close(sub)
    assert got[-1].kind == "resume" and len(got) <= QUEUE + 1  # never more than it holds
    resume_after = got[-1].text
    assert f'"after":"{got[-2].token}"' in resume_after
    rest = await _frames(hub, task_id, parse_token(got[-2].token, "after"))
    whole = await _frames(hub, task_id, start)
    assert [f.text for f in got[:-1] + rest] == [f.text for f in whole]
    assert len(whole) == 10


async def test_subscribers_beyond_the_cap_are_refused(hub: StreamHub) -> None:
    subs = [hub.open(1, 0, None), hub.open(None, 0, "running")]
    with pytest.raises(StreamsFullError):
        hub.open(2, 0, None)
    hub.close(subs[0])
    hub.close(subs[0])  # closing twice frees one place only
    subs.append(hub.open(3, 0, None))
    with pytest.raises(StreamsFullError):
        hub.open(4, 0, None)
    assert hub.subscribers == 2


async def test_a_stream_whose_response_never_ran_frees_its_place(hub: StreamHub) -> None:
    """A client that leaves before its stream starts never reaches close()."""
    for task_id in range(1, 5):
        hub.open(task_id, 0, None)  # dropped at once, as a response never sent
    gc.collect()
    assert hub.subscribers == 0


async def test_one_fan_out_wakes_each_subscriber_once_with_bytes_encoded_once(
    services: Services, hub: StreamHub
) -> None:
    """Every subscriber of a task gets what one read brought as one batch (one write), and the
    same message is the same bytes for all of them."""
    app = services.app
    task_id = await services.run_sync(create_task, app)
    execution_id = app.get_task(task_id).execution_ids[0]
    await wait_until(reached(hub, await services.run_sync(app.recorder.max_notification_id)))
    start = (hub.fetched, 9)
    subs = [hub.open(task_id, 0, None) for _ in range(2)]
    follows = [hub.follow(sub, start, heartbeat=30, max_age=60) for sub in subs]
    firsts = [asyncio.create_task(anext(follow)) for follow in follows]  # join, then wait
    await asyncio.sleep(0.2)
    batches = [ExecutionLog.batch(v, execution_id, task_id, log_lines(2, start=2 * v), {})
               for v in range(1, QUEUE)]  # fmt: skip
    position = (await services.run_sync(app.save, *batches))[-1].notification.id  # one commit
    await wait_until(reached(hub, position), timeout=10)
    got = [await first for first in firsts]
    for follow, sub in zip(follows, subs, strict=True):
        await follow.aclose()
        hub.close(sub)
    a, b = got
    assert a is not None and b is not None
    assert [f.kind for f in a] == ["logs"] * len(batches)
    assert all(x.sse is y.sse and x.text is y.text for x, y in zip(a, b, strict=True))
