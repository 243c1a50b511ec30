"""The write path never waits for ever: large group commits, timeouts on every connection."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from deduction.adapters.postgres import eventsourcing_env
from deduction.application.group_save import GroupSave
from deduction.application.service import DeductionApp
from deduction.application.services import Services
from deduction.domain import ExecutionLog

BOUND = 30.0  # seconds; the saves below take about one


def busy_poll_batch(execution_id: int, lines: int = 100, width: int = 1000) -> Any:
    """One poll's log event: `lines` lines of `width` characters (about 100 KB)."""
    body = [{"timestamp": "2025-11-12T10:00:00Z", "level": "INFO", "message": "m" * width,
             "source": "sensor", "extra": {"i": i}} for i in range(lines)]  # fmt: skip
    return ExecutionLog.batch(1, execution_id, 1, body, {"n": 1})


def test_a_group_commit_of_megabytes_over_a_unix_socket_completes(embedded_db_url: str) -> None:
    """Forty polls of 100 KB each share transactions of up to 5 MB over the embedded server's
    socket; every one is saved (libpq's pipeline left such a write half-sent for ever)."""
    assert "host=/" in embedded_db_url or "host=%2F" in embedded_db_url
    app = DeductionApp(env=eventsourcing_env(embedded_db_url, pool_size=4))
    group = GroupSave(app.save, weigh=lambda ev: sum(1 + len(e.lines) for e in ev))
    positions: list[int] = []
    threads = [threading.Thread(target=lambda i=i: positions.append(group([busy_poll_batch(i)])),
                                daemon=True) for i in range(1, 41)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    stuck = sum(t.is_alive() for t in threads)
    assert stuck == 0, f"{stuck} saves still waiting after {BOUND}s: the write path froze"
    assert len(positions) == 40 and group.transactions < 40  # shared, and all saved
    assert app.recorder.max_notification_id() == 40
    app.close()


def _timeouts(conn: psycopg.Connection[Any]) -> dict[str, str]:
    names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    cur = conn.cursor(row_factory=tuple_row)
    return {n: str(cur.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0])
            for n in names}  # fmt: skip


async def test_every_connection_has_the_timeouts_of_its_role(services: Services) -> None:
    """Event store, API read pool and projections each set all three server-side bounds."""
    with services.app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
        store = _timeouts(conn)
    async with services.pool.connection() as aconn:
        cur = await aconn.execute("SHOW statement_timeout")
        reads = str((await cur.fetchone())[0])
    with psycopg.connect(services.runner._url) as conn:  # type: ignore[attr-defined]
        projections = _timeouts(conn)
    assert store == {"statement_timeout": "30s", "lock_timeout": "10s",
                     "idle_in_transaction_session_timeout": "10s"}  # fmt: skip
    assert reads == "15s"
    assert projections == {"statement_timeout": "2min", "lock_timeout": "30s",
                           "idle_in_transaction_session_timeout": "1min"}  # fmt: skip
