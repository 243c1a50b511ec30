"""The bulk reader of the PostgreSQL store answers as the library's public API does."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from deduction.adapters.event_store import PostgresEventStreams, event_streams_for
from deduction.application.reports import RepositoryStreams
from deduction.application.service import DeductionApp
from deduction.domain import ExecutionLog
from deduction.domain.ids import to_uuid
from deduction.domain.logs import log_stream_id
from tests.support.plan import create_task


def _line(message: str) -> dict[str, Any]:
    return {"timestamp": "2025-11-12T08:00:00Z", "level": "INFO", "message": message}


def test_the_bulk_reader_loads_what_the_repository_and_recorder_load(app: DeductionApp) -> None:
    task_id = create_task(app)
    task = app.get_task(task_id)
    red, blue = task.execution_ids
    execution = app.get_execution(red)
    execution.change_status("running", "engine")
    execution.report_progress(30)
    app.save(execution)
    first = {"ts": "2025-11-12T08:00:00Z", "n": 1}
    newest = {"ts": "2025-11-12T08:00:01Z", "n": 2}
    app.save(ExecutionLog.batch(1, red, task_id, [_line("a")], first),
             ExecutionLog.batch(2, red, task_id, [_line("b"), _line("c")], newest))  # fmt: skip
    aggregate_ids = [to_uuid(task_id), to_uuid(red), to_uuid(blue), to_uuid(999)]
    streams = [log_stream_id(red), log_stream_id(blue)]

    bulk = event_streams_for(app)
    assert isinstance(bulk, PostgresEventStreams)
    got, heads = bulk.load(aggregate_ids, streams)
    want, want_heads = RepositoryStreams(app).load(aggregate_ids, streams)

    def state(aggregates: dict[Any, Any]) -> dict[Any, Any]:
        return {k: (type(a).__name__, a.version, a.status, getattr(a, "progress", None))
                for k, a in aggregates.items()}  # fmt: skip

    assert state(got) == state(want)
    assert set(got) == {to_uuid(task_id), to_uuid(red), to_uuid(blue)}
    assert got[to_uuid(red)].progress == 30
    assert heads == want_heads
    assert [(h.version, h.cursor) for h in heads.values()] == [(2, newest)]


def test_what_came_after_known_versions_is_read_as_the_recorder_reads_it(
    app: DeductionApp,
) -> None:
    """Events after the versions a caller holds, and log heads past a version: the bulk
    reader answers as the library's public API, and leaves out what did not move."""
    task_id = create_task(app)
    red, blue = app.get_task(task_id).execution_ids
    execution = app.get_execution(red)
    held = execution.version
    execution.change_status("running", "engine")
    execution.report_progress(40)
    app.save(execution)
    cursor = {"ts": "2025-11-12T08:00:00Z", "n": 1}
    app.save(ExecutionLog.batch(1, red, task_id, [_line("a")], cursor))
    versions = {to_uuid(task_id): app.get_task(task_id).version, to_uuid(red): held,
                to_uuid(blue): app.get_execution(blue).version}  # fmt: skip
    heads_after = {log_stream_id(red): 0, log_stream_id(blue): 0}

    bulk = event_streams_for(app)
    assert bulk is not None
    got, heads = bulk.read_after(versions, heads_after)
    want, want_heads = RepositoryStreams(app).read_after(versions, heads_after)

    def kinds(events: dict[Any, list[Any]]) -> dict[Any, list[tuple[str, int]]]:
        return {k: [(type(e).__name__, e.originator_version) for e in v] for k, v in events.items()}

    assert kinds(got) == kinds(want) == {
        to_uuid(red): [("StatusChanged", held + 1), ("ProgressReported", held + 2)]}  # fmt: skip
    assert heads == want_heads and [(h.version, h.cursor) for h in heads.values()] == [(1, cursor)]
    later, unmoved = bulk.read_after(versions, {log_stream_id(red): 1})
    assert kinds(later) == kinds(got) and unmoved == {}  # the head is at the version held


def test_poll_reads_look_up_each_stream_by_index(app: DeductionApp) -> None:
    """However large the store, the poll's reads (a task's aggregates and log heads, and what
    came after the versions it holds) are index lookups per stream, in the plan the prepared
    statements settle on. Written as joins, once log streams were long the planner chose a
    sequential scan of the whole events table: 45 ms a poll at 190,000 events."""
    create_task(app)
    bulk = event_streams_for(app)
    assert isinstance(bulk, PostgresEventStreams)
    ids = [to_uuid(n) for n in range(1, 11)]
    statements = {
        "load": (bulk._load_sql, (ids, ids)),  # the statements themselves
        "after": (bulk._after_sql, (ids, [3] * len(ids), ids, [3] * len(ids))),
    }
    with app.recorder.datastore.get_connection() as conn:
        conn.execute(
            "INSERT INTO deduction_events (originator_id, originator_version, topic, state)"
            " SELECT md5(i::text)::uuid, v, 'filler', '\\x7b7d'::bytea"
            " FROM generate_series(1, 1000) AS v, generate_series(1, 200) AS i"
            " ORDER BY v, i"  # long streams, interleaved, as polls write them
        )
        conn.execute("ANALYZE deduction_events")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        for name, (statement, params) in statements.items():
            rows = conn.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
            plan = "\n".join(r["QUERY PLAN"] if isinstance(r, dict) else r[0] for r in rows)
            assert "Seq Scan on deduction_events" not in plan, (name, plan)
            assert "Hash Join" not in plan, (name, plan)
