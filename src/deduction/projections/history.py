"""The deduction_task_history read model: one row per auditable event, with its operator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from deduction.domain import AgentExecution, DeductionTask
from deduction.projections.base import EventRow, Projection, Row, fetch_all, insert_rows

T, A = DeductionTask, AgentExecution
DDL = [
    """
    CREATE TABLE IF NOT EXISTS deduction_task_history (
        id bigint PRIMARY KEY,
        deduction_task_id bigint NOT NULL,
        change_type varchar(32) NOT NULL,
        change_description varchar(256),
        old_value jsonb,
        new_value jsonb,
        change_time timestamptz NOT NULL,
        operator varchar(64),
        agent_execution_id bigint,
        create_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS idx_task_history_task_id ON deduction_task_history(deduction_task_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_task_history_change_time ON deduction_task_history(change_time)",
]

# What readers see of a history entry, in the order the API answers with.
READ_COLUMNS = (
    "id", "deduction_task_id", "agent_execution_id", "change_type", "change_description",
    "old_value", "new_value", "change_time", "operator", "create_at", "position",
)  # fmt: skip

# change_type, description, old_value, new_value, agent_execution_id
Change = tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, int | None]


def _created(s: dict[str, Any]) -> Change:
    n = len(s["execution_ids"])
    return ("status_change", f"task created with {n} agents", None, {"status": "pending"}, None)


def _task_status(s: dict[str, Any]) -> Change:
    why = f": {s['reason']}" if s.get("reason") else ""
    return (
        "status_change",
        f"task {s['old_status']} -> {s['new_status']}{why}",
        {"status": s["old_status"]},
        {"status": s["new_status"], "reason": s.get("reason")},
        None,
    )


def _config(s: dict[str, Any]) -> Change:
    old, new = s["old_params"], s["new_params"]
    keys = sorted(k for k in new.keys() | old.keys() if old.get(k) != new.get(k) or k not in old)
    return (
        "config_update",
        f"params of {s['agent_name']} updated: {', '.join(keys)}",
        {k: old[k] for k in keys if k in old},
        {k: new[k] for k in keys if k in new},
        None,
    )


def _agent_status(s: dict[str, Any]) -> Change:
    why = f": {s['error']}" if s.get("error") else ""
    new: dict[str, Any] = {"status": s["new_status"]}
    if s.get("error") is not None:
        new["error"] = s["error"]
    if s.get("result") is not None:
        new["result"] = s["result"]
    return (
        "agent_update",
        f"{s['agent_name']} {s['old_status']} -> {s['new_status']}{why}",
        {"status": s["old_status"]},
        new,
        None,
    )


_CHANGES: dict[str, Callable[[dict[str, Any]], Change]] = {
    "DeductionTask.Created": _created,
    "DeductionTask.Submitted": lambda s: (
        "submission",
        f"submitted to the Engine as {s['engine_task_id']}",
        None,
        {"engine_task_id": s["engine_task_id"], "engine_url": s["engine_url"]},
        None,
    ),
    "DeductionTask.StatusChanged": _task_status,
    "DeductionTask.PriorityRaised": lambda s: (
        "priority_change", f"priority raised from {s['old_priority']} to {s['new_priority']}",
        {"priority": s["old_priority"]}, {"priority": s["new_priority"]}, None,
    ),
    "DeductionTask.StopRequested": lambda s: (
        "stop_request", f"stop requested by {s['operator']}", None, None, None
    ),
    "DeductionTask.StopDelivered": lambda s: (
        "stop_request", "the Engine accepted the stop", None, None, None
    ),
    "DeductionTask.UpdateDelivered": lambda s: (
        "config_update", "the Engine accepted the configuration update", None,
        {"update_id": s["update_id"]}, None,
    ),
    "DeductionTask.EngineUnreachable": lambda s: (
        "engine_connectivity", f"the Engine is unreachable: {s['error']}"[:256], None,
        {"unreachable_since": s["since"], "error": s["error"]}, None,
    ),
    "DeductionTask.EngineRunMissing": lambda s: (
        "engine_connectivity", s["error"][:256], None,
        {"run_missing_since": s["since"], "error": s["error"]}, None,
    ),
    "DeductionTask.EngineReachable": lambda s: (
        "engine_connectivity", "the Engine is reachable again", None, None, None
    ),
    "DeductionTask.UpdateRejected": lambda s: (
        "config_update", f"update rejected by the Engine: {s['error']}"[:256], None,
        {"update_id": s["update_id"], "error": s["error"]}, None,
    ),
    "AgentExecution.LogLinesSkipped": lambda s: (
        "log_gap",
        f"{s['count']} log lines of {s['agent_name']} could not be read and were skipped",
        None,
        {"lines": s["count"]},
        None,
    ),
    "AgentExecution.LogGapRecorded": lambda s: (
        "log_gap", f"{s['agent_name']}: {s['detail']}"[:256], None,
        {"start": s["start"], "end": s["end"], "lines": s["line_count"]}, None,
    ),
    "AgentExecution.ConfigUpdated": _config,
    "AgentExecution.StatusChanged": _agent_status,
    "AgentExecution.AttemptFailed": lambda s: (
        "agent_update",
        f"{s['agent_name']} attempt {s['attempt']} failed, retrying: {s.get('error')}"[:256],
        None, {"retry_count": s["attempt"], "error": s.get("error")}, None,
    ),
    "AgentExecution.RestartRequested": lambda s: (
        "agent_update",
        f"{s['agent_name']} restart requested from the Engine (retry {s['attempt']})",
        None, {"retry_count": s["attempt"]}, None,
    ),
    "AgentExecution.Restarted": lambda s: (
        "agent_update", f"{s['agent_name']} restarted (retry {s['attempt']})", None,
        {"retry_count": s["attempt"]}, None,
    ),
}  # fmt: skip


def history_row(e: EventRow) -> Row:
    """The history entry of one event (the live table and state-as-of share this)."""
    s = e.state
    change_type, description, old, new, _ = _CHANGES[e.name](s)
    is_agent = e.name.startswith("AgentExecution.")
    return {
        "id": e.notification_id,  # one history row per event: the ids replay identically
        "deduction_task_id": s["task_id"] if is_agent else e.originator_int,
        "agent_execution_id": e.originator_int if is_agent else None,
        "change_type": change_type, "change_description": description[:256],
        "old_value": old, "new_value": new, "change_time": e.timestamp,
        "operator": s.get("operator"), "create_at": e.timestamp, "position": e.notification_id,
    }  # fmt: skip


class HistoryProjection(Projection):
    name = "history"
    ddl = DDL
    tables = ("deduction_task_history",)
    events = (
        T.Created, T.Submitted, T.StatusChanged, T.StopRequested, T.StopDelivered,
        T.UpdateDelivered, T.UpdateRejected, T.EngineUnreachable, T.EngineReachable,
        T.EngineRunMissing, T.PriorityRaised, A.ConfigUpdated, A.StatusChanged, A.AttemptFailed,
        A.RestartRequested, A.Restarted, A.LogLinesSkipped, A.LogGapRecorded,
    )  # fmt: skip

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        rows = []
        for e in events:
            r = history_row(e)
            old, new = r["old_value"], r["new_value"]
            rows.append(
                (
                    r["id"], r["deduction_task_id"], r["change_type"], r["change_description"],
                    None if old is None else Jsonb(old), None if new is None else Jsonb(new),
                    r["change_time"], r["operator"], r["agent_execution_id"], r["create_at"],
                )
            )  # fmt: skip
        await insert_rows(
            conn,
            "INSERT INTO deduction_task_history (id, deduction_task_id, change_type,"
            " change_description, old_value, new_value, change_time, operator,"
            " agent_execution_id, create_at)",
            rows,
        )


@dataclass(frozen=True)
class HistoryFilter:
    """Which entries of a task's history to read: after a position, of a change type, by an
    operator, within [start, end); at most `limit` (None: all)."""

    after: int = 0
    limit: int | None = None
    change_type: str | None = None
    operator: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def keeps(self, row: Row) -> bool:
        """The same test in memory (for history rebuilt as of a moment)."""
        return (
            row["id"] > self.after
            and (self.change_type is None or row["change_type"] == self.change_type)
            and (self.operator is None or row["operator"] == self.operator)
            and (self.start is None or row["change_time"] >= self.start)
            and (self.end is None or row["change_time"] < self.end)
        )


class HistoryView(Protocol):
    """The queries the API makes of deduction_task_history."""

    async def of_task(
        self, task_id: int, which: HistoryFilter = HistoryFilter()
    ) -> list[Row] | None: ...


# An entry's id is the position of the event it came from (one entry per event).
_SELECT = sql.SQL("SELECT {}, id AS position FROM deduction_task_history").format(
    sql.SQL(", ").join(sql.Identifier(c) for c in READ_COLUMNS if c != "position")
)
_TASK_EXISTS = "SELECT 1 FROM deduction_task WHERE id = %s"


def _history_query(task_id: int, which: HistoryFilter) -> tuple[sql.Composed, list[Any]]:
    where = [sql.SQL("deduction_task_id = %s AND id > %s")]
    params: list[Any] = [task_id, which.after]
    for clause, value in (
        ("change_type = %s", which.change_type), ("operator = %s", which.operator),
        ("change_time >= %s", which.start), ("change_time < %s", which.end),
    ):  # fmt: skip
        if value is not None:
            where.append(sql.SQL(clause))
            params.append(value)
    limit = sql.SQL("") if which.limit is None else sql.SQL(" LIMIT {}").format(which.limit)
    query = sql.SQL("{} WHERE {} ORDER BY id{}").format(
        _SELECT, sql.SQL(" AND ").join(where), limit
    )
    return query, params


class PostgresHistoryView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def of_task(
        self, task_id: int, which: HistoryFilter = HistoryFilter()
    ) -> list[Row] | None:
        """The task's changes, oldest first; None when there is no such task."""
        query, params = _history_query(task_id, which)
        async with self._pool.connection() as conn:
            cur = await conn.execute(_TASK_EXISTS, [task_id])
            if await cur.fetchone() is None:
                return None
            return await fetch_all(conn, query, params)
