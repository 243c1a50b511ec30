"""Changes after a position: what the read tables hold that events after P wrote, in order.

Every row a stream shows carries the position of the event that last wrote it: the
history row's id is its event's position, a log line's id is position * 1024 + index,
and task and agent rows keep `position`. So "what changed in (after, upto]" is one
indexed range query per table. Task and agent rows hold their newest state only: a
row written twice in the range shows once, at its newest position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from deduction.domain import TERMINAL
from deduction.projections import history
from deduction.projections.base import Row
from deduction.projections.logs import LINE_ID_FACTOR
from deduction.projections.logs import READ_COLUMNS as LOG_COLUMNS

Kind = Literal["history", "logs", "agent", "task", "end"]
# Within one position: the history entry first, then the row it explains, the end last.
RANKS: dict[Kind, int] = {"history": 1, "logs": 2, "agent": 3, "task": 4, "end": 5}
TASK_COLUMNS = (
    "id", "name", "status", "total_agents", "completed_agents", "failed_agents", "start_time",
    "end_time", "error_message", "stop_requested", "engine_unreachable_since", "engine_error",
    "update_at",
)  # fmt: skip
AGENT_COLUMNS = (
    "id", "deduction_task_id", "seq", "agent_name", "side", "status", "engine_agent_id",
    "progress", "start_time", "end_time", "result", "error_message", "retry_count", "max_retry",
    "update_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    """One message's worth of read-table state: a row, or a log event's lines."""

    position: int
    kind: Kind
    task_id: int
    rows: list[Row]

    @property
    def key(self) -> tuple[int, int]:
        return self.position, RANKS[self.kind]


@dataclass(frozen=True)
class ChangePage:
    changes: list[Change]
    reached: int
    """Every change up to this position is in this page or an earlier one."""


class ChangeView(Protocol):
    async def changes(
        self, task_ids: list[int] | None, after: int, upto: int, limit: int = 2000
    ) -> ChangePage: ...

    async def task_exists(self, task_id: int) -> bool: ...

    async def ended_at(self, task_id: int) -> int | None: ...


def _query(template: str, columns: tuple[str, ...]) -> str:
    """`template` with the columns put in for `{}`, rendered once."""
    return sql.SQL(template).format(sql.SQL(", ").join(map(sql.Identifier, columns))).as_string()


_RANGE = "position > %(after)s AND position <= %(upto)s ORDER BY position LIMIT %(limit)s"
_TASKS_OF = _query(
    "SELECT {}, position, previous_status FROM deduction_task WHERE id = ANY(%(ids)s) AND "
    + _RANGE,
    TASK_COLUMNS,
)
_ALL_TASKS = _query(
    "SELECT {}, position, previous_status FROM deduction_task WHERE " + _RANGE, TASK_COLUMNS
)
_AGENTS = _query(
    "SELECT {}, position FROM agent_execution WHERE deduction_task_id = ANY(%(ids)s) AND " + _RANGE,
    AGENT_COLUMNS,
)
_HISTORY = _query(  # an entry's position is its id
    "SELECT {}, id AS position FROM deduction_task_history WHERE deduction_task_id = ANY(%(ids)s)"
    " AND id > %(after)s AND id <= %(upto)s ORDER BY id LIMIT %(limit)s",
    tuple(c for c in history.READ_COLUMNS if c != "position"),
)
_LOGS = _query(
    "SELECT {}, deduction_task_id, level_no FROM agent_execution_log"
    " WHERE deduction_task_id = ANY(%(ids)s) AND id >= %(first_line)s AND id < %(end_line)s"
    " ORDER BY id LIMIT %(limit)s",
    LOG_COLUMNS,
)
# A task has ended for a stream once it is terminal and every agent the Engine ran has had
# its last lines read: nothing more will be written. It ends at the newest of those facts.
_ENDED = """
SELECT t.id, t.status, greatest(t.position, coalesce(max(d.position), 0)) AS ended_at
FROM deduction_task t LEFT JOIN agent_execution_log_drained d ON d.deduction_task_id = t.id
WHERE t.id = ANY(%(ids)s) AND t.status = ANY(%(terminal)s) AND NOT EXISTS (
    SELECT 1 FROM agent_execution a WHERE a.deduction_task_id = t.id
    AND a.engine_agent_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM agent_execution_log_drained x WHERE x.agent_execution_id = a.id))
GROUP BY t.id
"""
_ENDED_ONE = _ENDED.replace("= ANY(%(ids)s)", "= %(id)s", 1)


class PostgresChangeView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def task_exists(self, task_id: int) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM deduction_task WHERE id = %s", [task_id])
            return await cur.fetchone() is not None

    async def ended_at(self, task_id: int) -> int | None:
        """The position at which the task's stream ended; None while it goes on."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_ENDED_ONE, {"id": task_id, "terminal": sorted(TERMINAL)})
            row = await cur.fetchone()
        return None if row is None else int(row[2])

    async def changes(
        self, task_ids: list[int] | None, after: int, upto: int, limit: int = 2000
    ) -> ChangePage:
        """The changes in (after, upto] of the given tasks (None: task rows of every task).

        At most about `limit` rows per table: `reached` says how far the page goes, and
        never splits one position's changes between pages.
        """
        if upto <= after:
            return ChangePage([], after)
        params = {"ids": task_ids, "after": after, "upto": upto, "limit": limit,
                  "first_line": (after + 1) * LINE_ID_FACTOR,
                  "end_line": (upto + 1) * LINE_ID_FACTOR,
                  "terminal": sorted(TERMINAL)}  # fmt: skip
        async with self._pool.connection() as conn:
            results = await _fetch(conn, task_ids, params)
        return _page(results, after, upto, limit)


async def _fetch(
    conn: AsyncConnection[Any], task_ids: list[int] | None, params: dict[str, Any]
) -> dict[str, list[Row]]:
    queries = {"task": _ALL_TASKS} if task_ids is None else {
        "task": _TASKS_OF, "agent": _AGENTS, "history": _HISTORY, "logs": _LOGS, "end": _ENDED,
    }  # fmt: skip
    async with conn.pipeline():
        cursors = {}
        for kind, query in queries.items():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(query, params, prepare=True)
            cursors[kind] = cur
    return {kind: await cur.fetchall() for kind, cur in cursors.items()}


def _page(results: dict[str, list[Row]], after: int, upto: int, limit: int) -> ChangePage:
    reached = upto
    for kind, rows in results.items():
        if kind != "end" and len(rows) >= limit:  # cut short: complete only up to its last row
            last = _position(kind, rows[-1])
            reached = min(reached, last - 1 if kind == "logs" else last)
    changes = [c for c in _changes(results) if after < c.position <= reached]
    changes.sort(key=lambda c: c.key)
    return ChangePage(changes, reached)


def _position(kind: str, row: Row) -> int:
    if kind == "history":
        return int(row["id"])
    if kind == "logs":
        return int(row["id"]) // LINE_ID_FACTOR
    return int(row["position"])


def _changes(results: dict[str, list[Row]]) -> list[Change]:
    out = [Change(r["position"], "task", r["id"], [r]) for r in results.get("task", [])]
    out += [Change(r["position"], "agent", r["deduction_task_id"], [r])
            for r in results.get("agent", [])]  # fmt: skip
    out += [Change(r["id"], "history", r["deduction_task_id"], [r])
            for r in results.get("history", [])]  # fmt: skip
    batch: list[Row] = []
    for row in results.get("logs", []):  # one message per log event: its lines together
        if batch and _position("logs", batch[0]) != _position("logs", row):
            out.append(_lines(batch))
            batch = []
        batch.append(row)
    if batch:
        out.append(_lines(batch))
    out += [Change(int(r["ended_at"]), "end", r["id"], [{"status": r["status"]}])
            for r in results.get("end", [])]  # fmt: skip
    return out


def _lines(batch: list[Row]) -> Change:
    return Change(_position("logs", batch[0]), "logs", batch[0]["deduction_task_id"], batch)
