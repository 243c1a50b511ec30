"""Reading logs from Engines that 4.1 allows but that behave like many real ones."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import msgspec
from psycopg import AsyncConnection

from deduction.application.log_cursor import Cursor, ingest
from deduction.application.log_lines import stored_ts_of
from deduction.application.ports import EngineLogLine, EngineLogPage
from deduction.application.services import Services
from deduction.reference_engine.simulation import ZERO_TIME, Knobs, Simulation
from tests.support.engine import (
    EngineClock,
    LiveEngine,
    drain,
    live_engine,
    monitor_for,
    run_to_end,
)
from tests.support.log_reader import check_agent, read_in_process
from tests.support.logs import engine_multiset, stored_multiset
from tests.support.plan import create_task, new_task
from tests.support.waits import settled, wait_until


async def _rows(services: Services, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        cur = await conn.execute(sql, list(args))
        return await cur.fetchall()


async def _compare(services: Services, live: LiveEngine, task_id: int) -> dict[int, Any]:
    """Per execution: (lines the Engine emitted unbroken but we did not store, lines stored
    that it never emitted, the lines it sent broken)."""
    await settled(services)
    task = services.app.get_task(task_id)
    emitted = live.emitted(task.engine_task_id)
    out = {}
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        for eid in task.execution_ids:
            lines = emitted[services.app.get_execution(eid).engine_agent_id]
            expected = engine_multiset([x for x in lines if "flaw" not in x])
            stored = await stored_multiset(conn, eid)
            broken = sum("flaw" in x for x in lines)
            out[eid] = (expected - stored, stored - expected, broken)
    return out


async def _run(services: Services, live: LiveEngine, **kw: Any) -> int:
    async with monitor_for(services, live.url, **kw) as monitor:
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await run_to_end(monitor, task_id, polls=2000)
        await drain(monitor, task_id)
    return task_id


async def test_capped_pages_and_failing_calls_lose_no_line(services: Services) -> None:
    """An unannounced cap of 7 lines per answer, with 500s and stalls: every line is stored."""
    async with live_engine(page_cap=7, error_rate=0.15, stall_rate=0.05, stall_seconds=0.5,
                           log_rate=80, collide_rate=0.3, seed=5) as live:  # fmt: skip
        task_id = await _run(services, live, timeout=0.3)
        result = await _compare(services, live, task_id)
    assert all(missing == Counter() and extra == Counter() for missing, extra, _ in
               result.values()), result  # fmt: skip


async def test_a_whole_second_engine_with_a_small_page_is_read_to_the_end(
    services: Services,
) -> None:
    """Timestamps and `since` at whole seconds, two seconds' lines more than a page: every
    line is read, except in a second holding more lines than a page, which is a recorded gap."""
    async with live_engine(ts_resolution="s", since_resolution="s", since_inclusive=True,
                           page_cap=25, log_rate=12, duration_min=2.2, duration_max=2.6,
                           collide_rate=0.0) as live:  # fmt: skip
        task_id = await _run(services, live)
        result = await _compare(services, live, task_id)
        calls = live.engine.stats["logs"]
    for missing, extra, _ in result.values():
        assert extra == Counter()
        starts = {r[0] for r in await _rows(services, "SELECT new_value->>'start' FROM"
                  " deduction_task_history WHERE deduction_task_id = %s AND change_type ="
                  " 'log_gap'", task_id)}  # fmt: skip
        assert all(key[0].strftime("%Y-%m-%dT%H:%M:%S.000000Z") in starts for key in missing)
    assert calls < 400


async def test_more_lines_at_one_instant_than_a_page_are_a_visible_gap(services: Services) -> None:
    """What 4.1 cannot give is recorded: a gap event, a history entry, a counter."""
    async with live_engine(burst=30, page_cap=10, since_inclusive=True) as live:
        task_id = await _run(services, live)
        result = await _compare(services, live, task_id)
    for eid, (missing, extra, _) in result.items():
        assert extra == Counter()
        assert missing, "the burst cannot be read whole through pages of 10"
        assert sum("warm-up" in key[2] for key in missing) == 20
        assert len({key[0] for key in missing}) == 1  # all at the burst's instant
        gaps = await _rows(services, "SELECT log_gaps FROM agent_execution WHERE id = %s", eid)
        assert gaps[0][0] >= 1
    history = await _rows(services, "SELECT change_description FROM deduction_task_history"
                          " WHERE deduction_task_id = %s AND change_type = 'log_gap'", task_id)  # fmt: skip
    assert len(history) >= 2
    assert "could not be read" in history[0][0]


async def test_malformed_lines_are_skipped_one_by_one_and_counted(services: Services) -> None:
    async with live_engine(malformed_rate=0.1, seed=3) as live:
        task_id = await _run(services, live)
        result = await _compare(services, live, task_id)
    for eid, (missing, extra, broken) in result.items():
        assert (missing, extra) == (Counter(), Counter())
        skipped = await _rows(
            services, "SELECT log_lines_skipped FROM agent_execution WHERE id = %s", eid
        )
        assert skipped[0][0] == broken > 0


async def test_zero_time_timestamps_do_not_stop_the_reading(services: Services) -> None:
    async with live_engine(zero_time_rate=0.2, seed=4) as live:
        task_id = await _run(services, live)
        result = await _compare(services, live, task_id)
    assert all(missing == Counter() and extra == Counter() for missing, extra, _ in
               result.values()), result  # fmt: skip
    assert services.app.get_task(task_id).status == "completed"


def test_a_cursor_at_the_zero_time_still_gives_a_since() -> None:
    cursor = Cursor(ts="0001-01-01T00:00:00.000000Z", tail={"x": 1})
    assert cursor.since() is not None


async def test_numbering_that_restarts_with_the_agent_drops_no_line(services: Services) -> None:
    async with live_engine(seq_restart=True, fail_rate=0.5, seed=2) as live:
        async with monitor_for(services, live.url) as monitor:
            new = new_task(max_retry=3)
            task_id = await services.run_sync(create_task, services.app, new)
            await monitor.submit_task(task_id)
            await run_to_end(monitor, task_id, polls=2000)
            await drain(monitor, task_id)
        result = await _compare(services, live, task_id)
        assert live.engine.stats["restarts"] >= 1
    assert all(missing == Counter() and extra == Counter() for missing, extra, _ in
               result.values()), result  # fmt: skip


def test_numbered_and_unnumbered_pages_do_not_store_a_line_twice() -> None:
    def line(ms: int, text: str, seq: int | None) -> EngineLogLine:
        return EngineLogLine(timestamp=f"2025-11-12T10:00:00.{ms:03d}Z", message=text, seq=seq)

    emitted = [line(1, "a", 0), line(2, "b", 1), line(2, "c", 2), line(3, "d", 3)]
    stored: list[Any] = []
    cursor = Cursor()
    for numbered, page in ((True, emitted[:3]), (False, emitted[1:]), (True, emitted[2:])):
        page = [x if numbered else EngineLogLine(x.timestamp, message=x.message) for x in page]
        since = cursor.since()
        got = ingest(cursor, EngineLogPage(list(page)), 100, since)
        cursor = got.cursor
        stored += [x["message"] for x in got.lines]
    assert sorted(stored) == ["a", "b", "c", "d"]


async def test_a_task_failed_at_the_deadline_is_stopped_when_the_engine_returns(
    services: Services,
) -> None:
    async with live_engine(duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url, timeout=0.3, deadline=0.3) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await monitor.poll_task(task_id)
        await live.stop()
        for _ in range(40):
            outcome = await monitor.poll_task(task_id)
            if outcome is not None and outcome.status == "failed":
                break
            await asyncio.sleep(0.05)
        assert outcome is not None and outcome.status == "failed" and outcome.needs_stop
        await live.start()

        async def stopped() -> bool:
            await monitor.send_stop(task_id)
            return live.engine.stats["stops"] == 1

        await wait_until(stopped)  # once the circuit lets a call through
        await drain(monitor, task_id)
        result = await _compare(services, live, task_id)
    assert all(missing == Counter() for missing, _, _ in result.values()), result


async def test_an_update_the_engine_rejects_is_recorded_and_not_resent(services: Services) -> None:
    async with live_engine(reject_updates="param defense_level is read-only",
                           duration_min=30, duration_max=30) as live, \
            monitor_for(services, live.url) as monitor:  # fmt: skip
        task_id = await services.run_sync(create_task, services.app)
        await monitor.submit_task(task_id)
        await monitor.poll_task(task_id)
        eid = services.app.get_task(task_id).execution_ids[1]
        await services.run_sync(services.app.update_config, task_id,
                                [(eid, {"defense_level": "low"})], "tester")  # fmt: skip
        outcome = await monitor.send_update(task_id)
        assert outcome is not None and not outcome.pending_updates
        calls = live.engine.stats["requests"]
        assert await monitor.send_update(task_id) is None
        assert live.engine.stats["requests"] == calls
        await monitor.send_stop(task_id)
    await settled(services)
    history = await _rows(services, "SELECT change_description FROM deduction_task_history"
                          " WHERE deduction_task_id = %s AND change_type = 'config_update'",
                          task_id)  # fmt: skip
    assert any("update rejected" in row[0] and "read-only" in row[0] for row in history), history


def test_a_line_without_a_time_opening_an_answer_is_not_stored_again() -> None:
    """A zero-time line read after another line, then opening a later answer (the Engine cut
    `since` just before it), is the same line: it is stored once."""

    def line(ms: int | None, text: str) -> EngineLogLine:
        ts = "0001-01-01T00:00:00Z" if ms is None else f"2025-11-12T10:00:00.{ms:03d}Z"
        return EngineLogLine(timestamp=ts, message=text)

    first = ingest(Cursor(), EngineLogPage([line(1, "a"), line(None, "z"), line(2, "n")]), 100)
    cursor = replace(first.cursor, mode="exclusive")
    since = cursor.since()
    again = ingest(cursor, EngineLogPage([line(None, "z"), line(2, "n"), line(3, "m")]), 100, since)
    assert [x["message"] for x in first.lines + again.lines] == ["a", "z", "n", "m"]


def test_zero_time_lines_on_a_capped_exclusive_engine_are_stored_once() -> None:
    """Read in-process through pages of 7 from an exclusive Engine whose lines collide and
    sometimes carry Go's zero time: over 30 seeds, every line is stored exactly once."""
    decode = msgspec.json.Decoder(EngineLogLine)
    for seed in range(30):
        clock = EngineClock(1_700_000_000.0)
        sim = Simulation(Knobs(seed=seed, page_cap=7, collide_rate=0.3, log_rate=80,
                               zero_time_rate=0.1, duration_min=0.5, duration_max=0.8,
                               fail_rate=0.0, duplicate_rate=0.05), clock)  # fmt: skip
        engine_task_id, _ = sim.submit({"agents": [{"agent_name": "red"}]}, None)
        agent = sim.tasks[engine_task_id].agents[0]
        cursor, stored = Cursor(), Counter[str]()
        for _ in range(200):
            clock.now += 0.02
            since = cursor.since()
            page = EngineLogPage([decode.decode(msgspec.json.encode(x))
                                  for x in sim.logs(agent.id, since, 1000)])  # fmt: skip
            got = ingest(cursor, page, 1000, since, agent.status(clock.now)[0] == "completed")
            cursor = got.cursor
            stored.update(f"{x['timestamp']} {x['message']}" for x in got.lines)
        emitted = Counter(f"{stored_ts_of(x['timestamp'])} {x['message']}"
                          for x in (sim.render(line) for line in agent.lines))  # fmt: skip
        assert stored == emitted, f"seed {seed}: {stored - emitted} twice, {emitted - stored} lost"


def test_a_numbered_gap_does_not_count_a_broken_line_read_before_it() -> None:
    """Pages of 5 at one instant that holds 6 numbered lines, the fifth sent broken: the gap
    holds exactly the one line never read (the broken one was read, and counted skipped);
    when the numbering starts again after the gap, or may have (the agent was restarted), its
    size is unknown."""

    def line(ms: int, seq: int) -> EngineLogLine:
        return EngineLogLine(timestamp=f"2025-11-12T10:00:00.{ms:03d}Z", message=f"{seq}", seq=seq)

    full = EngineLogPage([*(line(2, seq) for seq in range(1, 5)), b'{"timestamp":null}'])
    # the numbering restarts: seen (seq 0), or possible (the agent was restarted meanwhile)
    for after, attempt, lines in ((line(3, 7), 0, 1), (line(3, 0), 0, None), (line(3, 7), 2, None)):
        cursor, gaps, skipped = Cursor(), [], 0
        for i, page in enumerate((full, full, full, full, EngineLogPage([after]))):
            since = cursor.since()
            got = ingest(cursor, page, 100, since, True, attempt if i == 4 else 0)
            cursor, skipped = got.cursor, skipped + got.skipped
            gaps += [got.gap.lines] if got.gap else []
        assert (gaps, skipped) == ([lines], 1)


def test_a_line_without_a_time_is_not_stored_again_past_a_gap_on_a_whole_second_engine() -> None:
    """Timestamps and `since` at whole seconds, every line in one second, some stamped with
    Go's zero time (the first among them): the reader cannot tell that second from a full page,
    so it moves past it as a gap of unknown size; the answers after that reach back into the
    second, and the zero-time line that opens them was stored already: it is not stored again."""
    knobs = {"seed": 1, "ts_resolution": "s", "since_resolution": "s", "since_inclusive": True,
             "zero_time_rate": 0.2, "burst": 4, "collide_rate": 0.2, "duplicate_rate": 0.0,
             "log_rate": 81, "duration_min": 0.1, "duration_max": 0.56}  # fmt: skip
    (record,) = read_in_process(knobs)
    assert record.emitted[0]["timestamp"] == ZERO_TIME
    check_agent(record, numbered=False)


def test_more_broken_lines_in_a_row_than_a_page_do_not_stop_the_reading() -> None:
    """Pages of 5 and one line in five sent broken: somewhere five broken lines come in a row,
    an answer that gives no time to go on from. The reader moves past them (a gap, recorded
    once), counts each broken line once, and reads the agent to the end."""
    knobs = {"page_cap": 5, "since_inclusive": False, "ts_resolution": "us",
             "collide_rate": 0.0, "duplicate_rate": 0.0, "malformed_rate": 0.2,
             "seed": 925654, "log_rate": 260.0, "duration_min": 0.21,
             "duration_max": 0.45}  # fmt: skip
    for record in read_in_process(knobs, 2, polls=200):
        check_agent(record, numbered=False)


def test_a_numbered_gap_across_a_restart_has_an_unknown_size() -> None:
    """Numbering from 0 on every attempt, whole-second `since`, pages of 7: the reader moves
    past a second it cannot read whole while the agent has been restarted twice; the numbers
    either side of the gap belong to different attempts, so the gap's size is unknown (not the
    difference of two unrelated numbers, which here says fewer lines than are missing)."""
    knobs = {"page_cap": 7, "since_inclusive": False, "since_resolution": "s",
             "ts_resolution": "ms", "duplicate_rate": 0.05, "zero_time_rate": 0.05,
             "seq_restart": True, "burst": 4, "fail_rate": 0.3, "error_rate": 0.2,
             "stall_rate": 0.05, "seed": 366180, "log_rate": 155.0, "duration_min": 0.16,
             "duration_max": 0.83}  # fmt: skip
    (record,) = read_in_process(knobs)
    assert any(line["message"].endswith("(attempt 3)") for line in record.emitted)
    check_agent(record, numbered=True)


def test_a_gap_past_lines_without_a_time_covers_them() -> None:
    """Pages of 5, numbered lines, one in five stamped with Go's zero time and some repeated
    exactly: a run of nine zero-time lines (six of them the same line) follows a timed one.
    The reader moves past the run in steps; the line it cannot tell from a stored copy is
    inside the recorded gap, which starts at the last time a stored line carried."""
    knobs = {"page_cap": 5, "since_inclusive": False, "ts_resolution": "us",
             "zero_time_rate": 0.2, "malformed_rate": 0.05, "extras": True,
             "collide_rate": 0.5, "duplicate_rate": 0.2, "error_rate": 0.1, "seed": 677837,
             "log_rate": 292.83, "duration_min": 0.215, "duration_max": 0.683}  # fmt: skip
    (record,) = read_in_process(knobs)
    check_agent(record, numbered=True)


def test_a_line_without_a_time_after_a_gap_s_end_is_read() -> None:
    """Pages of 5, lines colliding, one in five sent broken and one in five with Go's zero
    time: past a gap, two broken lines put the cursor at the gap's end, an instant no line
    carries; the agent's last line, without a time, then opens every answer. It is new, and
    is stored (it was lost: taken for a line stored before)."""
    knobs = {"page_cap": 5, "since_inclusive": False, "ts_resolution": "us",
             "zero_time_rate": 0.2, "malformed_rate": 0.2, "collide_rate": 0.5,
             "duplicate_rate": 0.05, "seed": 552002, "log_rate": 40.0,
             "duration_min": 0.15498711008967792, "duration_max": 0.6602809202405822}  # fmt: skip
    (record,) = read_in_process(knobs)
    assert record.emitted[-1]["timestamp"] == ZERO_TIME
    check_agent(record, numbered=False)


def test_a_gap_on_a_whole_second_exclusive_engine_covers_the_second_it_ends_at() -> None:
    """`since` exclusive and cut to whole seconds, pages of 40, a burst and colliding lines:
    the reader moves past a second it cannot read whole and asks from the next whole second,
    which such an Engine answers without the lines stamped exactly at it. No read shows
    whether an Engine cutting to seconds is exclusive, so the gap covers that instant too."""
    knobs = {"page_cap": 40, "since_inclusive": False, "since_resolution": "s",
             "ts_resolution": "ms", "collide_rate": 0.2, "duplicate_rate": 0.2,
             "zero_time_rate": 0.2, "seq_restart": True, "burst": 12, "fail_rate": 0.3,
             "error_rate": 0.1, "seed": 117997, "log_rate": 228.4747222790693,
             "duration_min": 0.3485282749961131, "duration_max": 0.7062164293275265}  # fmt: skip
    (record,) = read_in_process(knobs)
    assert any(line["timestamp"].endswith(":21.000Z") for line in record.emitted)
    check_agent(record, numbered=True)


def test_a_gap_still_open_when_the_reading_ends_is_recorded() -> None:
    """A whole-second Engine, pages of 7, numbered lines: eight lines in one second, the
    seventh sent broken, so the eighth is never in a page; then the agent's last line, without
    a time. The reader moves past the second; the one answer after it holds only that broken
    line, so no number tells the gap's size, and it is shorter than a page: the reading ends
    there (the worker stops reading an ended agent). The gap is recorded then, of unknown
    size, covering the lost line (it was left open and never recorded: the line was lost
    without a trace)."""
    second = "2025-11-12T10:00:00Z"
    lines: list[EngineLogLine | bytes] = [
        *(EngineLogLine(timestamp=second, message=f"{seq}", seq=seq) for seq in range(6)),
        b'{"timestamp":"2025-11-12T10:00:00Z","message":"6","seq":"6"}',
    ]
    last = EngineLogPage([b'{"timestamp":null,"message":"8","seq":8}'])

    def answer(since: str | None) -> EngineLogPage:
        inside = since is None or stored_ts_of(since) <= stored_ts_of(second)
        return EngineLogPage(lines) if inside else last

    cursor, gaps, complete = Cursor(), [], False
    for _ in range(20):
        since = cursor.since()
        got = ingest(cursor, answer(since), 100, since, True)
        cursor, complete = got.cursor, got.complete
        gaps += [got.gap] if got.gap else []
        if complete:
            break
    assert complete
    assert len(gaps) == 1, gaps
    assert gaps[0].lines is None
    assert stored_ts_of(gaps[0].start) <= stored_ts_of(second) < stored_ts_of(gaps[0].end)
