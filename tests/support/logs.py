"""Log lines to feed in, and the multisets that compare what an Engine sent with what is stored."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg import AsyncConnection

from deduction.application.log_cursor import normalise
from deduction.application.ports import EngineLogLine
from deduction.application.service import DeductionApp
from deduction.domain import ExecutionLog
from tests.support.api import Api

LEVEL_CYCLE = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)
_enc = msgspec.json.Encoder(order="sorted")


def log_lines(count: int, start: int = 0, levels: list[str] | None = None) -> list[dict[str, Any]]:
    """Line i is at T0 + i seconds, with level levels[i % len(levels)] and message "line i"."""
    levels = levels or LEVEL_CYCLE
    return [
        {
            "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
            "level": levels[i % len(levels)],
            "message": f"line {i}",
            "source": "network_module",
            "extra": {"i": i},
        }
        for i in range(start, start + count)
    ]


def mixed_log_lines(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Lines as stored, one a second from 10:00Z; some without source, some without extra."""
    levels = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR", "CRITICAL"]
    return [
        {
            "timestamp": f"2025-11-12T10:{(start + i) // 60 % 60:02d}:{(start + i) % 60:02d}Z",
            "level": levels[(start + i) % len(levels)],
            "message": f"line {start + i}",
            "source": "network_module" if i % 2 else None,
            "extra": {"i": start + i} if i % 3 == 0 else None,
        }
        for i in range(n)
    ]


def append_logs(
    app: DeductionApp, execution_id: int, task_id: int, batches: list[list[dict[str, Any]]]
) -> int:
    """Save log batches on the execution's log stream; returns the last position."""
    position = 0
    for batch in batches:
        last = app.recorder.select_events(
            ExecutionLog.batch(1, execution_id, task_id, [], {}).originator_id, desc=True, limit=1
        )
        version = last[0].originator_version + 1 if last else 1
        recordings = app.save(ExecutionLog.batch(version, execution_id, task_id, batch, {}))
        position = recordings[-1].notification.id
    return position


def line_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """A comparable form of a stored line (timestamp as an instant, extra as canonical JSON)."""
    ts = line["timestamp"]
    ts = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)
    extra = line.get("extra")
    return (ts, line["level"], line["message"], line.get("source"),
            None if extra is None else _enc.encode(extra))  # fmt: skip


def engine_multiset(lines: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    normalised = [normalise(msgspec.convert(x, EngineLogLine)) for x in lines]
    return Counter(line_key(x) for x in normalised if x is not None)


async def stored_multiset(
    conn: AsyncConnection[Any], execution_id: int
) -> Counter[tuple[Any, ...]]:
    cur = await conn.execute(
        "SELECT timestamp, level, message, source, extra_data FROM agent_execution_log"
        " WHERE agent_execution_id = %s",
        [execution_id],
    )
    return Counter(
        line_key({"timestamp": r[0], "level": r[1], "message": r[2], "source": r[3], "extra": r[4]})
        for r in await cur.fetchall()
    )


async def save_logs(
    api: Api, execution_id: int, task_id: int, batches: list[list[dict[str, Any]]]
) -> None:
    """Record log batches as the worker would, and wait until the log table shows them."""
    events = [
        ExecutionLog.batch(version, execution_id, task_id, lines, {"n": version})
        for version, lines in enumerate(batches, start=1)
    ]
    recordings = await api.services.run_sync(api.services.app.save, *events)
    position = max(r.notification.id for r in recordings)
    assert await api.services.runner.wait_for(position, 10)
