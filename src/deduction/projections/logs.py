"""LogProjection: agent_execution_log rows (COPY) and per-level line counts."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection

from deduction.domain import ExecutionLog
from deduction.domain.logs import LEVELS
from deduction.projections import tables
from deduction.projections.base import EventRow, Projection

LINE_ID_FACTOR = 1024  # a log line's id is notification_id * 1024 + its index in the batch
_json = msgspec.json.Encoder()


class LogProjection(Projection):
    name = "logs"
    ddl = tables.LOGS
    tables = ("agent_execution_log", "agent_execution_log_count")
    events = (ExecutionLog.LogsReceived,)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        counts: Counter[tuple[int, int, int]] = Counter()
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY agent_execution_log (id, agent_execution_id, deduction_task_id, timestamp,"
                " level, level_no, message, source, extra_data, create_at) FROM STDIN"
            ) as copy:
                for e in events:
                    s = e.state
                    execution_id, task_id = s["execution_id"], s["task_id"]
                    base = e.notification_id * LINE_ID_FACTOR
                    for i, line in enumerate(s["lines"]):
                        level = line["level"]
                        level_no = LEVELS.get(level, 20)
                        extra = line.get("extra")
                        await copy.write_row(
                            (
                                base + i,
                                execution_id,
                                task_id,
                                datetime.fromisoformat(line["timestamp"]),
                                level,
                                level_no,
                                line["message"],
                                line.get("source"),
                                None if extra is None else _json.encode(extra).decode(),
                                e.timestamp,
                            )
                        )
                        counts[(execution_id, task_id, level_no)] += 1
            if counts:
                await cur.executemany(
                    "INSERT INTO agent_execution_log_count AS c"
                    " (agent_execution_id, deduction_task_id, level_no, lines)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (agent_execution_id, level_no)"
                    " DO UPDATE SET lines = c.lines + EXCLUDED.lines",
                    [(ex, t, lv, n) for (ex, t, lv), n in sorted(counts.items())],
                )
