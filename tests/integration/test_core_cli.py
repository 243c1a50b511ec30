"""The `deduction` command: projections status and rebuild on a real database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import psycopg
from psycopg import AsyncConnection

from deduction.application.service import DeductionApp
from deduction.projections.runner import head_position, positions
from tests.support.snapshots import catch_up, make_history, snapshot
from tests.support.waits import wait_until


def deduction(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "deduction", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_rebuild_reproduces_tables_and_status_shows_no_lag(
    app: DeductionApp, db_url: str
) -> None:
    """`projections rebuild` replays into equal tables; `projections status` shows lag 0."""
    make_history(app, tasks=3)
    await catch_up(db_url)
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        live = await snapshot(conn)
        done = deduction(db_url, "projections", "rebuild")
        assert done.returncode == 0, done.stderr
        assert "events/s" in done.stdout and "logs" in done.stderr
        assert await snapshot(conn) == live
    status = deduction(db_url, "projections", "status")
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines()[1:]]
    assert {r[0] for r in rows} == {
        "tasks",
        "agents",
        "logs",
        "history",
        "catalog",
        "tokens",
        "engine_load",
    }
    assert all(r[3] == "0" for r in rows)


def test_cli_rejects_an_unknown_projection_and_bad_settings(db_url: str, app: DeductionApp) -> None:
    """Mistakes give a clear message and exit code 2, not a traceback."""
    done = deduction(db_url, "projections", "rebuild", "nope")
    assert done.returncode == 2 and "unknown projection(s): nope" in done.stderr
    env = {**os.environ, "DATABASE_URL": db_url, "LOG_BATCH_SIZE": "5000"}
    bad = subprocess.run(
        [sys.executable, "-m", "deduction", "projections", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "LOG_BATCH_SIZE" in bad.stderr


def start_projector(db_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "LOG_LEVEL": "INFO"}
    return subprocess.Popen([sys.executable, "-m", "deduction", "projector"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


async def test_the_projector_keeps_the_read_tables_and_stops_on_sigterm(
    app: DeductionApp, db_url: str
) -> None:
    """`deduction projector` alone brings the read tables to the events (equal to a rebuild),
    states its connection budget, and exits cleanly on SIGTERM."""
    make_history(app, tasks=2)
    proc = start_projector(db_url)
    try:
        async with await AsyncConnection.connect(db_url, autocommit=True) as conn:

            async def caught_up() -> bool:
                assert proc.poll() is None
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    head = await head_position(conn)
                    return min((await positions(conn)).values(), default=0) >= head
                return False

            await wait_until(caught_up, timeout=60, interval=0.2)
            projected = await snapshot(conn)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "postgres.connection_budget" in output and "projector.started" in output
    assert deduction(db_url, "projections", "rebuild").returncode == 0
    async with await AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await snapshot(conn) == projected
