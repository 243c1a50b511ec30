"""The `deduction` command: projections status and rebuild on a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from psycopg import AsyncConnection

from deduction.application.service import DeductionApp
from tests.support.snapshots import catch_up, make_history, snapshot


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
    assert {r[0] for r in rows} == {"tasks", "agents", "logs", "history", "catalog"}
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
