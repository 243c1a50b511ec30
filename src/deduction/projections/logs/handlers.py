"""LogProjection: agent_execution_log rows (COPY) and per-level line counts."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from psycopg import AsyncConnection

from deduction.domain import ExecutionLog
from deduction.domain.logs import DEFAULT_LEVEL, LEVELS
from deduction.domain.text import NUL
from deduction.projections.base import EventRow, Projection
from deduction.projections.logs.table import DDL

LINE_ID_FACTOR = 1024  # a log line's id is notification_id * 1024 + its index in the batch
_json = msgspec.json.Encoder()


class LogProjection(Projection):
    name = "logs"
    ddl = DDL
    tables = ("agent_execution_log", "agent_execution_log_count", "agent_execution_log_drained")
    events = (ExecutionLog.LogsReceived,)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        counts: Counter[tuple[int, int, int]] = Counter()
        out: list[str] = []
        drained: list[tuple[int, int, int]] = []
        for e in events:
            s = e.state
            execution_id, task_id = s["execution_id"], s["task_id"]
            if s.get("cursor", {}).get("drained"):
                drained.append((execution_id, task_id, e.notification_id))
            head = f"\t{execution_id}\t{task_id}\t"
            created = e.timestamp.isoformat()
            base = e.notification_id * LINE_ID_FACTOR
            for i, line in enumerate(s["lines"]):
                level = line["level"]
                level_no = LEVELS.get(level, _DEFAULT_LEVEL_NO)
                level_text = level if level in LEVELS else _text(level)
                extra = line.get("extra")
                source = line.get("source")
                out.append(
                    f"{base + i}{head}{_text(line['timestamp'])}\t{level_text}\t{level_no}\t"
                    f"{_text(line['message'])}\t{_NULL if source is None else _text(source)}\t"
                    f"{_NULL if extra is None else _json_text(extra)}\t{created}\n"
                )
                counts[(execution_id, task_id, level_no)] += 1
        if drained:
            await _record_drained(conn, drained)
        if not out:
            return
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY agent_execution_log (id, agent_execution_id, deduction_task_id, timestamp,"
                " level, level_no, message, source, extra_data, create_at) FROM STDIN"
            ) as copy:
                await copy.write("".join(out))
            keys = sorted(counts)
            await cur.execute(
                "INSERT INTO agent_execution_log_count AS c"
                " (agent_execution_id, deduction_task_id, level_no, lines)"
                " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::smallint[], %s::bigint[])"
                " ON CONFLICT (agent_execution_id, level_no)"
                " DO UPDATE SET lines = c.lines + EXCLUDED.lines",
                [
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [counts[k] for k in keys],
                ],
            )


async def _record_drained(conn: AsyncConnection[Any], drained: list[tuple[int, int, int]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO agent_execution_log_drained (agent_execution_id, deduction_task_id,"
            " position) VALUES (%s, %s, %s) ON CONFLICT (agent_execution_id) DO NOTHING",
            drained,
        )


_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", NUL: ""})
_DEFAULT_LEVEL_NO = LEVELS[DEFAULT_LEVEL]


def _text(value: str) -> str:
    """A value in COPY's text format (backslash, tab and newlines escaped)."""
    if value.isprintable() and "\\" not in value:
        return value  # the common case, checked without building a new string
    return value.translate(_ESCAPES)


def _json_text(value: object) -> str:
    """JSON for a jsonb column: PostgreSQL refuses NUL, so NULs are dropped from the values
    (and keys) before encoding, never by editing the encoded text."""
    encoded = _json.encode(value)
    if b"\\u0000" in encoded:  # maybe a NUL; maybe the text `\u0000`, which is kept
        encoded = _json.encode(without_nul(value))
    return _text(encoded.decode())


def without_nul(value: Any) -> Any:
    """`value` with every NUL character removed from its strings, keys included."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value
