"""State as of a moment from snapshots: for every position and every moment of a run, the rows
folded onto the snapshot before it equal the rows folded from the task's first event."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool

from deduction.adapters.audit_store import PostgresEventLog
from deduction.application.audit import EventQuery, TaskStreams
from deduction.application.service import DeductionApp
from deduction.projections import as_of, as_of_snapshots
from deduction.projections.as_of import AsOfReader, Fold, TaskState
from deduction.projections.as_of_snapshots import PostgresSnapshots
from tests.support.plan import new_task, seed_catalog

EVERY = 4


def _step(app: DeductionApp, task_id: int, rng: random.Random) -> None:
    """One random thing that can happen to a running task."""
    task = app.get_task(task_id)
    executions = [app.get_execution(i) for i in task.execution_ids]
    ex = rng.choice(executions)
    if ex.is_ended or task.is_ended:
        return
    choice = rng.randrange(12)
    if choice == 0:
        ex.update_params({"k": rng.randrange(100)}, rng.choice(["alice", "bob"]))
    elif choice < 10:
        ex.apply_engine_report("running", rng.randrange(100), None, None)
    elif choice == 10:
        ex.apply_engine_report("failed", 50, None, "boom", restart_supported=True)
    else:
        ex.apply_engine_report("completed", 100, {"score": rng.randrange(10)}, None)
    task.settle(executions)
    app.save(task, *executions)


@pytest.fixture
def run(app: DeductionApp, db_url: str) -> int:
    """A task that went through a random run, its events interleaved with another task's."""
    seed_catalog(app)
    rng = random.Random(7)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    other = app.create_task(new_task("other"), "bob").data["task_id"]
    for tid in (task_id, other):
        task = app.get_task(tid)
        task.record_submitted("engine-1", "http://engine")
        app.save(task)
    for _ in range(60):
        _step(app, rng.choice([task_id, task_id, other]), rng)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in as_of_snapshots.DDL:
            conn.execute(statement)
    return task_id


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as p:
        yield p


async def _reference(log: PostgresEventLog, streams: TaskStreams) -> list[Any]:
    """Every state event of the task, folded from nothing: the answer without snapshots."""
    query = EventQuery(limit=None, aggregate_ids=streams.state_ids)
    return [as_of.event_row(r) for r in await log.select(query)]


def _fold(streams: TaskStreams, events: list[Any], position: int) -> TaskState:
    fold = Fold.start(streams, 10**9, None)
    fold.apply([e for e in events if e.notification_id <= position], None)
    return fold.state(position)


async def test_every_position_and_moment_equals_the_fold_from_the_start(
    run: int, pool: AsyncConnectionPool[Any], db_url: str
) -> None:
    """Asked in random order (so snapshots are written as reads pass them), every position
    and every moment answers exactly what folding all events up to it answers; so it does
    after a snapshot in the middle is removed."""
    log = PostgresEventLog(pool)
    streams = await log.task_streams(run)
    assert streams is not None
    events = await _reference(log, streams)
    assert len(events) > 6 * EVERY  # several snapshots
    reader = AsOfReader(log, PostgresSnapshots(pool, EVERY))
    rng = random.Random(3)
    positions = list(range(events[0].notification_id - 1, events[-1].notification_id + 3))
    moments = sorted({e.timestamp for e in events})
    moments = [m + d for m in moments for d in (timedelta(0), timedelta(microseconds=-1))]

    async def check() -> None:
        for p in rng.sample(positions, len(positions)):
            assert await reader.state(streams, p, None) == _fold(streams, events, p), p
        for m in rng.sample(moments, len(moments)):
            upto = rng.choice([None, rng.choice(positions)])
            position = max(
                (e.notification_id for e in events
                 if e.timestamp <= m and (upto is None or e.notification_id <= upto)),
                default=0,
            )  # fmt: skip
            assert await reader.state(streams, upto, m) == _fold(streams, events, position), m

    await check()
    with psycopg.connect(db_url, autocommit=True) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM as_of_snapshot ORDER BY seq")]
        assert seqs == [EVERY * n for n in range(1, len(events) // EVERY + 1)]
        conn.execute("DELETE FROM as_of_snapshot WHERE seq = %s", [seqs[len(seqs) // 2]])
    await check()


async def test_an_early_moment_is_before_the_task(run: int, pool: AsyncConnectionPool[Any]) -> None:
    """A moment before the task's first event finds no task."""
    log = PostgresEventLog(pool)
    streams = await log.task_streams(run)
    assert streams is not None
    reader = AsOfReader(log, PostgresSnapshots(pool, EVERY))
    await reader.state(streams, None, datetime.now().astimezone())  # writes snapshots
    state = await reader.state(streams, None, datetime(2000, 1, 1).astimezone())
    assert state.task is None and state.agents == [] and state.position == 0


class _CountingCursor(AsyncCursor[Any]):
    """Counts the statements sent to the server (the server is real; only calls are counted)."""

    sent = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        _CountingCursor.sent += 1
        return await super().execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> None:
        _CountingCursor.sent += 1
        await super().executemany(*args, **kwargs)


async def test_a_read_as_of_a_position_is_one_statement(run: int, db_url: str) -> None:
    """Once the task's snapshots are written, a read as of any of its positions is one
    statement: the task, the snapshot before the position and the events after it."""
    kwargs = {"cursor_factory": _CountingCursor, "autocommit": True}
    async with AsyncConnectionPool(db_url, min_size=1, max_size=1, kwargs=kwargs) as pool:
        log = PostgresEventLog(pool)
        reader = AsOfReader(log, PostgresSnapshots(pool, EVERY))
        events = await _reference(log, (await log.task_streams(run)) or TaskStreams(run, ()))
        positions = [e.notification_id for e in events]
        await reader.at_position(run, positions[-1])  # the first read writes the snapshots
        for p in random.Random(5).sample(positions, 20):
            before = _CountingCursor.sent
            streams, state = await reader.at_position(run, p)
            assert _CountingCursor.sent - before == 1, p
            assert streams is not None and state.task is not None
        assert await reader.at_position(run + 1, positions[-1]) == (
            None, TaskState(positions[-1], None, [])
        )  # fmt: skip
