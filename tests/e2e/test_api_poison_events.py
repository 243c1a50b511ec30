"""One odd log line never turns commands into 503s; an unappliable event is parked and shown."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from deduction.domain import ExecutionLog
from tests.support.api import TASK, Api
from tests.support.logs import log_lines

EXECUTION = "/api/v1/deduction/agent-execution"
BAD_TIME = {"timestamp": "not a time", "level": "INFO", "message": "x", "source": None,
            "extra": None}  # fmt: skip


async def save_unwaited(api: Api, execution_id: int, task_id: int, lines: list[Any]) -> int:
    """Save a log batch as the worker would, without waiting for the read tables."""
    event = ExecutionLog.batch(1, execution_id, task_id, lines, {})
    recordings = await api.services.run_sync(api.services.app.save, event)
    return int(recordings[-1].notification.id)


def deduction(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": api.services.database_url}
    return subprocess.run([sys.executable, "-m", "deduction", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


async def test_an_extra_holding_backslash_u0000_text_leaves_commands_answering(
    task: dict[str, Any], catalog: Api
) -> None:
    """The issue's poison line is stored as sent, and the next command answers 200."""
    red = task["agent_executions"][0]["id"]
    line = log_lines(1)[0] | {"extra": {"note": "\\u0000", "path": "C:\\u0000\\x"}}
    await save_unwaited(catalog, red, task["id"], [line])
    status, body = await catalog.call("POST", f"{TASK}/{task['id']}/stop")
    assert status == 200, body
    status, body = await catalog.call("GET", f"{EXECUTION}/{red}/logs")
    assert [entry["extra_data"] for entry in body["data"]["logs"]] == [line["extra"]]
    status, body = await catalog.call("GET", "/ready")
    assert status == 200 and body["data"]["dead_letters"] == {}


async def test_an_unappliable_event_is_parked_shown_and_can_be_skipped(
    task: dict[str, Any], catalog: Api
) -> None:
    """Commands answer 200; /ready and `projections status` show the parked event; a retry
    fails again while it is still unappliable, and `skip` clears it from the counts."""
    red = task["agent_executions"][0]["id"]
    position = await save_unwaited(catalog, red, task["id"], [BAD_TIME])
    status, body = await catalog.call("POST", f"{TASK}/{task['id']}/stop")
    assert status == 200, body
    status, body = await catalog.call("GET", "/ready")
    assert status == 200 and body["data"]["dead_letters"] == {"logs": 1}
    listed = await asyncio.to_thread(deduction, catalog, "projections", "dead-letters")
    assert listed.returncode == 0, listed.stderr
    [row] = [r.split("\t") for r in listed.stdout.splitlines() if r.startswith("logs\t")]
    assert row[:4] == ["logs", str(position), "parked", "ExecutionLog.LogsReceived"]
    shown = await asyncio.to_thread(deduction, catalog, "projections", "status")
    assert [r.split()[-1] for r in shown.stdout.splitlines() if r.startswith("logs")] == ["1"]
    again = await asyncio.to_thread(deduction, catalog, "projections", "retry", str(position))
    assert again.returncode == 1 and "logs: retry failed again" in again.stdout
    skipped = await asyncio.to_thread(deduction, catalog, "projections", "skip", str(position))
    assert skipped.returncode == 0 and "logs: skip done" in skipped.stdout
    status, body = await catalog.call("GET", "/ready")
    assert body["data"]["dead_letters"] == {}
