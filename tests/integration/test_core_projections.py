"""Projections apply each event exactly once and rebuild to identical tables."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from deduction.application.service import DeductionApp
from deduction.projections.base import INSERT_ROWS, EventRow, insert_rows
from deduction.projections.logs import LogProjection
from deduction.projections.runner import (
    ProjectionRunner,
    all_projections,
    head_position,
    positions,
    rebuild,
    run_page,
)
from tests.support.logs import append_logs
from tests.support.plan import new_task, seed_catalog
from tests.support.snapshots import catch_up, make_history, snapshot


async def test_reapplying_a_page_changes_nothing(app: DeductionApp, db_url: str) -> None:
    """Once a projection's position covers a page, running it again applies nothing."""
    make_history(app)
    await catch_up(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        before = await snapshot(conn)
        for projection in all_projections():
            assert (await run_page(conn, projection, 1000)).applied == 0
        assert await snapshot(conn) == before
        assert len(before["agent_execution_log"]) == 3 * 107


class CrashingLogs(LogProjection):
    """Writes its rows, then fails before the transaction commits."""

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        await super().apply(conn, events)
        raise psycopg.OperationalError("connection lost mid-page")


async def test_a_crash_mid_page_applies_nothing_and_the_retry_applies_once(
    app: DeductionApp, db_url: str
) -> None:
    """Rows and position commit together: a failed page leaves both untouched."""
    make_history(app, tasks=1)
    runner = ProjectionRunner(db_url)
    await runner.setup()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError):
            await run_page(conn, CrashingLogs(), 1000)
        assert (await positions(conn))["logs"] == 0
        cur = await conn.execute("SELECT count(*) FROM agent_execution_log")
        assert (await cur.fetchone())[0] == 0
        assert (await run_page(conn, LogProjection(), 1000)).applied == 3
        cur = await conn.execute("SELECT count(*), count(DISTINCT id) FROM agent_execution_log")
        assert await cur.fetchone() == (107, 107)


async def test_concurrent_runners_never_apply_a_page_twice(app: DeductionApp, db_url: str) -> None:
    """Two runners racing over the same events produce the single-runner tables."""
    make_history(app, tasks=4)
    await asyncio.gather(catch_up(db_url), catch_up(db_url), catch_up(db_url))
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        raced = await snapshot(conn)
        await rebuild(db_url)
        assert await snapshot(conn) == raced
        cur = await conn.execute("SELECT sum(lines) FROM agent_execution_log_count")
        assert (await cur.fetchone())[0] == len(raced["agent_execution_log"]) == 4 * 107


async def test_rebuild_reproduces_the_live_tables_row_for_row(
    app: DeductionApp, db_url: str
) -> None:
    """Dropping the read tables and replaying the events gives identical rows."""
    make_history(app, tasks=5)
    await catch_up(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        live = await snapshot(conn)
        assert all(live[t] for t in ("deduction_task", "agent_execution", "deduction_task_history"))
        seen: list[tuple[str, int, int]] = []
        applied = await rebuild(db_url, on_progress=lambda *a: seen.append(a))
        assert await snapshot(conn) == live
        assert applied["logs"] == 15 and applied["tasks"] > 0
        head = await head_position(conn)
        assert all(p >= head for p in (await positions(conn)).values())
        assert {name for name, _, _ in seen} == {p.name for p in all_projections()}


async def test_rebuild_of_one_projection_leaves_the_others_alone(
    app: DeductionApp, db_url: str
) -> None:
    """`rebuild history` touches only the history table."""
    make_history(app, tasks=2)
    await catch_up(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        live = await snapshot(conn)
        await conn.execute("DELETE FROM deduction_task_history WHERE id % 2 = 0")
        applied = await rebuild(db_url, ["history"])
        assert set(applied) == {"history"}
        assert await snapshot(conn) == live


async def test_rebuild_refuses_unknown_projection_names(db_url: str, app: DeductionApp) -> None:
    """A typo in a projection name is an error, not a silent no-op."""
    with pytest.raises(LookupError, match="nope"):
        await rebuild(db_url, ["tasks", "nope"])


async def test_log_lines_with_control_characters_round_trip(app: DeductionApp, db_url: str) -> None:
    """Tabs, newlines, backslashes and unicode survive COPY; NULs (refused by PostgreSQL) are dropped."""
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    red = app.get_task(task_id).execution_ids[0]
    nasty = [
        {
            "timestamp": "2025-11-12T10:35:22Z",
            "level": "ERROR",
            "message": "a\tb\nc\\d\re 红队",
            "source": "net\tmod",
            "extra": {"k": "v\u0000w", "tab": "\t"},
        },
        {
            "timestamp": "2025-11-12T10:35:23.123456Z",
            "level": "TRACE",
            "message": "nul\u0000here",
            "source": None,
            "extra": None,
        },
    ]
    append_logs(app, red, task_id, [nasty])
    await catch_up(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT level, level_no, message, source, extra_data FROM agent_execution_log ORDER BY id"
        )
        assert await cur.fetchall() == [
            ("ERROR", 40, "a\tb\nc\\d\re 红队", "net\tmod", {"k": "vw", "tab": "\t"}),
            ("TRACE", 20, "nulhere", None, None),
        ]


async def test_a_page_holds_about_max_bytes_of_events_and_the_runner_goes_on_at_once(
    app: DeductionApp, db_url: str
) -> None:
    """A page stops at the event that crosses `max_bytes` of stored state (the first one is
    always read); the next page carries on, and paging by bytes ends in the same tables as
    paging by count."""
    make_history(app, tasks=2)
    runner = ProjectionRunner(db_url, page_bytes=1)  # every page: one event
    await runner.setup()
    logs = LogProjection()
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT notification_id, octet_length(state) FROM deduction_events"
            " WHERE topic = ANY(%s) ORDER BY notification_id",
            [list(logs.topics())],
        )
        sizes = await cur.fetchall()
        two = sizes[0][1] + 1  # crossed by the second event
        first = await run_page(conn, logs, 1000, max_bytes=two)
        second = await run_page(conn, logs, 1000, max_bytes=1)
        assert (first.applied, first.position, first.full) == (2, sizes[1][0], True)
        assert (second.applied, second.position, second.full) == (1, sizes[2][0], True)
        await runner.catch_up(conn)  # one event a page, each full: it goes on at once
        assert (await positions(conn))["logs"] >= sizes[-1][0]
        by_bytes = await snapshot(conn)
    await rebuild(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await snapshot(conn) == by_bytes


class RecordingLogs(LogProjection):
    """Notes, at each call, how many events it was given and how often a concurrent task ran."""

    def __init__(self, ticks: list[int]) -> None:
        self.ticks, self.calls = ticks, []

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        self.calls.append((len(events), self.ticks[0]))
        await super().apply(conn, events)


async def test_a_large_page_is_applied_in_slices_letting_other_work_run_between_them(
    app: DeductionApp, db_url: str
) -> None:
    """A page of many log events is decoded and applied a slice at a time, and the event loop
    runs its other work (requests, the other projections) between slices, so a busy log
    table never holds a command's read-your-writes behind one long step; the tables come
    out as a whole-page apply leaves them."""
    make_history(app, tasks=2)
    runner = ProjectionRunner(db_url)
    await runner.setup()
    ticks = [0]
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            await asyncio.sleep(0)

    logs = RecordingLogs(ticks)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM deduction_events WHERE topic = ANY(%s)", [list(logs.topics())]
        )
        events = (await cur.fetchone())[0]
        assert events >= 6
        background = asyncio.create_task(ticker())
        try:
            page = await run_page(conn, logs, 1000, slice_events=2)
        finally:
            stop.set()
            await background
        assert page.applied == events
        assert sum(n for n, _ in logs.calls) == events
        assert max(n for n, _ in logs.calls) <= 2
        seen = [t for _, t in logs.calls]
        assert all(b > a for a, b in itertools.pairwise(seen)), seen  # loop ran between
        await runner.catch_up(conn)
        sliced = await snapshot(conn)
    await rebuild(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await snapshot(conn) == sliced


async def test_insert_rows_writes_pages_larger_than_one_statement(db_url: str) -> None:
    """Rows beyond one statement's share go in further statements, each value in its column."""
    count = 2 * INSERT_ROWS + 7
    rows = [(i, f"name {i}", Jsonb({"i": i}) if i % 2 else None) for i in range(1, count + 1)]
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("CREATE TEMP TABLE wide (id bigint PRIMARY KEY, name text, doc jsonb)")
        await insert_rows(conn, "INSERT INTO wide (id, name, doc)", rows)
        await insert_rows(conn, "INSERT INTO wide (id, name, doc)", [(1, "again", None)],
                          " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name")  # fmt: skip
        cur = await conn.execute("SELECT id, name, doc FROM wide ORDER BY id")
        found = await cur.fetchall()
    assert len(found) == count
    assert found[0] == (1, "again", {"i": 1})  # the update set the name only
    assert found[1:] == [(i, f"name {i}", {"i": i} if i % 2 else None) for i in range(2, count + 1)]
