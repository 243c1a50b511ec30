"""An event a projection cannot apply is parked, never a stop; a rebuild is never undone."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from psycopg import AsyncConnection

from deduction.application.service import DeductionApp
from deduction.projections.base import EventRow
from deduction.projections.dead_letters import dead_letters, retry, skip
from deduction.projections.logs import LogProjection
from deduction.projections.runner import (
    ProjectionRunner,
    head_position,
    positions,
    rebuild,
    run_page,
)
from deduction.projections.tasks import TaskProjection
from tests.support.logs import append_logs
from tests.support.logs import mixed_log_lines as log_lines
from tests.support.plan import new_task, seed_catalog
from tests.support.snapshots import snapshot


def logged_task(app: DeductionApp) -> tuple[int, int]:
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    return task_id, app.get_task(task_id).execution_ids[0]


async def log_rows(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute("SELECT message, extra_data FROM agent_execution_log ORDER BY id")
    return await cur.fetchall()


async def test_an_extra_holding_the_text_backslash_u0000_is_stored_as_sent(
    app: DeductionApp, db_url: str
) -> None:
    """The six characters `\\u0000` in an extra are text, kept as they are; a real NUL is dropped."""
    task_id, red = logged_task(app)
    line = log_lines(1)[0] | {"extra": {"path": "C:\\u0000x", "nul": "a\u0000b", "k\u0000": 1}}
    append_logs(app, red, task_id, [[line]])
    runner = ProjectionRunner(db_url)
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await runner.catch_up(conn)
        assert await log_rows(conn) == [("line 0", {"path": "C:\\u0000x", "nul": "ab", "k": 1})]
        assert await dead_letters(conn) == []


class FlakyLogs(LogProjection):
    """Cannot apply any batch holding a line with message `poison` while `broken`."""

    broken = True

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        if self.broken and any(
            line["message"] == "poison" for e in events for line in e.state["lines"]
        ):
            raise ValueError("cannot apply a poison line")
        await super().apply(conn, events)


def poisoned_history(app: DeductionApp) -> tuple[int, int]:
    """Three log batches, the middle one poisoned; returns (poison position, head)."""
    task_id, red = logged_task(app)
    append_logs(app, red, task_id, [log_lines(5, 0)])
    poison = append_logs(app, red, task_id, [[log_lines(1)[0] | {"message": "poison"}]])
    head = append_logs(app, red, task_id, [log_lines(5, 5)])
    return poison, head


BAD_TIME = {"timestamp": "not a time", "level": "INFO", "message": "x", "source": None,
            "extra": None}  # fmt: skip


async def test_a_poison_event_is_parked_and_the_rest_applied(
    app: DeductionApp, db_url: str
) -> None:
    """The page without the poison event commits with the position; the event is parked."""
    poison, head = poisoned_history(app)
    flaky = FlakyLogs()
    runner = ProjectionRunner(db_url, projections=[flaky])
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await runner.catch_up(conn)
        assert runner.reached(head)
        assert (await positions(conn))["logs"] == head
        assert len(await log_rows(conn)) == 10
        [letter] = await dead_letters(conn)
        assert (letter.projection, letter.position, letter.status) == ("logs", poison, "parked")
        assert letter.event_type == "ExecutionLog.LogsReceived"
        assert "cannot apply a poison line" in letter.error
        # Still broken: a retry fails again and the letter stays parked.
        assert await retry(conn, poison, [flaky]) == {"logs": False}
        flaky.broken = False
        assert await retry(conn, poison, [flaky]) == {"logs": True}
        assert await dead_letters(conn) == []
        assert "poison" in [m for m, _ in await log_rows(conn)]


async def test_skip_marks_a_letter_skipped_and_keeps_it_listed(
    app: DeductionApp, db_url: str
) -> None:
    """A skipped event stays unapplied, listed as skipped, and no longer counts as parked."""
    poison, _ = poisoned_history(app)
    runner = ProjectionRunner(db_url, projections=[FlakyLogs()])
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await runner.catch_up(conn)
        assert await skip(conn, poison) == {"logs": True}
        [letter] = await dead_letters(conn)
        assert letter.status == "skipped"
        assert await dead_letters(conn, parked_only=True) == []
        assert await skip(conn, poison + 1000) == {}


async def test_rebuild_parks_the_poison_event_and_finishes(app: DeductionApp, db_url: str) -> None:
    """A rebuild replays past an event it cannot apply, parks it, and ends at the head."""
    task_id, red = logged_task(app)
    head = append_logs(app, red, task_id, [log_lines(5, 0)])
    bad = append_logs(app, red, task_id, [[BAD_TIME]])
    append_logs(app, red, task_id, [log_lines(5, 5)])
    runner = ProjectionRunner(db_url)
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await runner.catch_up(conn)
        live = await snapshot(conn)
        assert len(live["agent_execution_log"]) == 10
        assert [d.position for d in await dead_letters(conn)] == [bad]
        await rebuild(db_url, page_size=2)
        assert await snapshot(conn) == live
        assert (await positions(conn))["logs"] == await head_position(conn) > head
        [letter] = await dead_letters(conn)
        assert letter.position == bad and letter.error


async def task_rows(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await conn.execute("SELECT * FROM deduction_task ORDER BY id")
    return await cur.fetchall()


class RebuildMidway:
    """A rebuild of `tasks` run on another thread, held after its first page."""

    def __init__(self, db_url: str) -> None:
        self.paused, self.resume = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, args=(db_url,))

    def _pause_once(self, name: str, position: int, head: int) -> None:
        if not self.paused.is_set():
            self.paused.set()
            self.resume.wait(30)

    def _run(self, db_url: str) -> None:
        asyncio.run(rebuild(db_url, ["tasks"], page_size=1, on_progress=self._pause_once))


class RacedConnection(AsyncConnection[Any]):
    """Lets a rebuild reset the tracking row between a runner's read and its position write."""

    rebuild: RebuildMidway | None = None

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        race = self.rebuild
        if race is not None and str(query).startswith("UPDATE projection_tracking"):
            self.rebuild = None
            race.thread.start()
            assert await asyncio.to_thread(race.paused.wait, 30)
            try:
                return await super().execute(query, params, **kwargs)
            finally:
                race.resume.set()
                await asyncio.to_thread(race.thread.join, 60)
        return await super().execute(query, params, **kwargs)


async def test_a_live_runner_never_undoes_a_rebuild_under_way(
    app: DeductionApp, db_url: str
) -> None:
    """A runner that found nothing to apply does not move a position a rebuild just reset."""
    task_id, red = logged_task(app)
    for n in range(3):
        app.create_task(new_task(f"more{n}"), "alice")
    runner = ProjectionRunner(db_url, projections=[TaskProjection()])
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await runner.catch_up(conn)
        live = await task_rows(conn)
        assert len(live) == 4
        append_logs(app, red, task_id, [log_lines(3)])  # no task event: an empty page
        raced = await RacedConnection.connect(db_url, autocommit=True)
        raced.rebuild = RebuildMidway(db_url)
        async with raced:
            page = await run_page(raced, TaskProjection(), 1000)
        assert page.applied == 0
        await runner.catch_up(conn)
        assert await task_rows(conn) == live
        assert (await positions(conn))["tasks"] == await head_position(conn)
