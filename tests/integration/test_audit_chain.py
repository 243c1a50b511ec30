"""The audit chain: verify names the first event edited, deleted, inserted or reordered with
SQL, and a checkpoint proves the record up to it unchanged."""

from __future__ import annotations

import io
from pathlib import Path

import psycopg
import pytest
from psycopg import AsyncConnection

from deduction.adapters import audit_cli
from deduction.adapters.audit_chain import create_chain_table, extend_chain, first_departure
from deduction.application.service import DeductionApp
from tests.support.logs import append_logs, mixed_log_lines
from tests.support.plan import new_task, seed_catalog


@pytest.fixture
async def store(app: DeductionApp, db_url: str) -> tuple[str, int]:
    """A catalog, two tasks (one with log batches), all chained; (database url, task id)."""
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    app.create_task(new_task("other"), "bob")
    execution_id = app.get_task(task_id).execution_ids[0]
    append_logs(app, execution_id, task_id, [mixed_log_lines(5), mixed_log_lines(3, 5)])
    app.request_stop(task_id, "carol")
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_chain_table(conn)
        assert await extend_chain(conn, page=7) == len(positions(db_url))  # in pages
        assert await extend_chain(conn) == 0  # exactly once
    return db_url, task_id


def sql(url: str, statement: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


async def run_verify(url: str, task: int | None = None, mark: str | None = None) -> str:
    out = io.StringIO()
    await audit_cli.verify(url, task, mark, out)
    return out.getvalue()


def positions(url: str) -> list[int]:
    return [int(r[0]) for r in sql(url, "SELECT notification_id FROM deduction_events ORDER BY 1")]


async def test_an_intact_store_verifies(store: tuple[str, int]) -> None:
    """Untouched, the whole chain and each task's part verify."""
    url, task_id = store
    assert (await run_verify(url)).startswith("OK the event store")
    assert (await run_verify(url, task_id)).startswith(f"OK task {task_id}")


def test_the_database_finds_where_the_walk_starts(store: tuple[str, int]) -> None:
    """PostgreSQL hashes events as the chain writer did: on an intact store it finds no
    departure (verify walks nothing), and an edited event is where the walk starts."""
    url, _ = store
    head, target = positions(url)[-1], positions(url)[3]
    with psycopg.connect(url) as conn, conn.transaction():
        assert first_departure(conn, head) is None
    sql(url, "UPDATE deduction_events SET state = state || ' '::bytea WHERE notification_id = %s",
        [target])  # fmt: skip
    with psycopg.connect(url) as conn, conn.transaction():
        assert first_departure(conn, head) == target
        assert first_departure(conn, target - 1) is None


def _search_in_parts(url: str, limit: int) -> int | None:
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return first_departure(conn, limit, lambda: psycopg.connect(url), parts=3)


def test_the_search_in_parts_finds_what_one_search_finds(store: tuple[str, int]) -> None:
    """Searched in three parts at once, each on a connection of its own, an intact store has
    no departure (each part starts from the digest before it), an edit is found in whichever
    part holds it, and the parts see the store as the caller's snapshot does."""
    url, _ = store
    all_positions = positions(url)
    head = all_positions[-1]
    assert _search_in_parts(url, head) is None
    edit = "UPDATE deduction_events SET state = state || ' '::bytea WHERE notification_id = %s"
    last = all_positions[-2]  # in the third part
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SELECT 1")  # the snapshot is taken: edits after it are not seen
        sql(url, edit, [last])
        assert first_departure(conn, head, lambda: psycopg.connect(url), parts=3) is None
    assert _search_in_parts(url, head) == last
    boundary = max(p for p in all_positions if p <= head // 3)  # the end of the first part
    sql(url, "UPDATE audit_chain SET digest = sha256(digest) WHERE position = %s", [boundary])
    assert _search_in_parts(url, head) == boundary


@pytest.mark.parametrize("task_part", [False, True])
async def test_an_edited_event_is_named(store: tuple[str, int], task_part: bool) -> None:
    """Changing one byte of a stored event fails verify at exactly that position."""
    url, task_id = store
    target = positions(url)[-1]  # the stop, an event of the task
    sql(url, "UPDATE deduction_events SET state = convert_to(replace(convert_from(state, 'UTF8'), 'carol', 'carl!'), 'UTF8')"
        " WHERE notification_id = %s", [target])  # fmt: skip
    text = await run_verify(url, task_id if task_part else None)
    assert f"first edited at position {target}" in text


async def test_a_deleted_event_is_named(store: tuple[str, int]) -> None:
    url, _ = store
    target = positions(url)[10]
    sql(url, "DELETE FROM deduction_events WHERE notification_id = %s", [target])
    assert f"first deleted at position {target}" in await run_verify(url)


async def test_reordered_events_are_named(store: tuple[str, int]) -> None:
    """Swapping two events' positions is found at the first of them."""
    url, _ = store
    a, b = positions(url)[4], positions(url)[6]
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "UPDATE deduction_events SET notification_id = -1 WHERE notification_id = %s", [a]
        )
        conn.execute(
            "UPDATE deduction_events SET notification_id = %s WHERE notification_id = %s", [a, b]
        )
        conn.execute(
            "UPDATE deduction_events SET notification_id = %s WHERE notification_id = -1", [b]
        )
    text = await run_verify(url)
    assert f"first reordered at position {a}" in text and f"chained at position {b}" in text


def copy_event(
    url: str,
    source: int,
    position: str = "nextval(pg_get_serial_sequence('deduction_events', 'notification_id'))",
) -> None:
    """Insert a copy of an event under a new aggregate id."""
    sql(url, "INSERT INTO deduction_events (originator_id, originator_version, topic, state,"
        f" notification_id) SELECT gen_random_uuid(), 1, topic, state, {position}"
        " FROM deduction_events WHERE notification_id = %s", [source])  # fmt: skip


async def test_an_inserted_event_is_named(store: tuple[str, int]) -> None:
    """An event put into a gap of the positions (a rolled-back save leaves one) is found."""
    url, _ = store
    (gap,) = sql(
        url, "SELECT nextval(pg_get_serial_sequence('deduction_events', 'notification_id'))"
    )[0]
    copy_event(url, positions(url)[0])  # a later, legitimate event
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        assert await extend_chain(conn) == 1
    copy_event(url, positions(url)[1], str(int(gap)))
    assert f"first inserted at position {gap}" in await run_verify(url)


async def test_a_checkpoint_proves_the_record_up_to_it(
    store: tuple[str, int], tmp_path: Path
) -> None:
    """verify --checkpoint passes on the untouched record and fails once events and chain
    were both rewritten consistently (which verify alone cannot see)."""
    url, _ = store
    out = io.StringIO()
    await audit_cli.print_checkpoint(url, out)
    mark = out.getvalue().strip()
    assert (await run_verify(url, None, mark)).startswith("OK")
    first = positions(url)[0]
    sql(
        url,
        "UPDATE deduction_events SET state = convert_to(replace(convert_from(state, 'UTF8'), 'alice', 'alicx'), 'UTF8')",
    )
    sql(url, "TRUNCATE audit_chain")
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await extend_chain(conn)  # a forger re-chains everything
    assert (await run_verify(url)).startswith("OK")
    text = await run_verify(url, None, mark)
    assert "FAILED" in text and "differs from the checkpoint" in text
    assert first > 0


async def test_export_then_verify_file_and_replay(store: tuple[str, int], tmp_path: Path) -> None:
    """`audit export` writes a file `verify --file` accepts; `replay` prints the timeline."""
    url, task_id = store
    path = tmp_path / "t.jsonl"
    assert await audit_cli.export(url, task_id, path, io.StringIO()) == 0
    out = io.StringIO()
    assert audit_cli.verify_export(path, out) == 0, out.getvalue()
    path.write_bytes(path.read_bytes().replace(b"carol", b"carl!", 1))
    assert audit_cli.verify_export(path, io.StringIO()) == 1
    out = io.StringIO()
    assert await audit_cli.replay(url, task_id, None, out) == 0
    text = out.getvalue()
    assert "DeductionTask.StopRequested" in text and "carol" in text and "5 log lines" in text


async def test_a_chain_page_holds_about_max_bytes_of_events(app: DeductionApp, db_url: str) -> None:
    """The chain writer reads at most about `max_bytes` of stored events a transaction (the
    event that crosses it is the last; the first is always read), whatever the page's count,
    and the chain it writes verifies as one written in larger pages does."""
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    execution_id = app.get_task(task_id).execution_ids[0]
    append_logs(app, execution_id, task_id, [mixed_log_lines(20, 20 * i) for i in range(4)])
    sizes = [int(r[0]) for r in sql(db_url, "SELECT octet_length(state) FROM deduction_events"
                                            " ORDER BY notification_id")]  # fmt: skip
    pages: list[int] = []
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        await create_chain_table(conn)
        chained = await extend_chain(conn, page=5000, max_bytes=1, on_page=pages.append)
    assert chained == len(sizes)
    assert pages == [1] * len(sizes)  # every event crosses one byte: one event a transaction
    assert (await run_verify(db_url)).startswith("OK the event store")
