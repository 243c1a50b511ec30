"""The deduction_task_history read model: one row per auditable event, with its operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from deduction.domain import AgentExecution, DeductionTask
from deduction.projections.base import EventRow, Projection, Row, fetch_all

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
    "old_value", "new_value", "change_time", "operator", "create_at",
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
    "AgentExecution.ConfigUpdated": _config,
    "AgentExecution.StatusChanged": _agent_status,
    "AgentExecution.AttemptFailed": lambda s: (
        "agent_update",
        f"{s['agent_name']} attempt {s['attempt']} failed, retrying: {s.get('error')}"[:256],
        None, {"retry_count": s["attempt"], "error": s.get("error")}, None,
    ),
    "AgentExecution.Restarted": lambda s: (
        "agent_update", f"{s['agent_name']} restarted (retry {s['attempt']})", None,
        {"retry_count": s["attempt"]}, None,
    ),
}  # fmt: skip


class HistoryProjection(Projection):
    name = "history"
    ddl = DDL
    tables = ("deduction_task_history",)
    events = (
        T.Created, T.Submitted, T.StatusChanged, T.StopRequested, T.StopDelivered,
        T.UpdateDelivered, T.EngineUnreachable, T.EngineReachable, T.EngineRunMissing,
        A.ConfigUpdated, A.StatusChanged, A.AttemptFailed, A.Restarted,
    )  # fmt: skip

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        rows = []
        for e in events:
            s = e.state
            change_type, description, old, new, _ = _CHANGES[e.name](s)
            is_agent = e.name.startswith("AgentExecution.")
            rows.append(
                (
                    e.notification_id,  # one history row per event: the ids replay identically
                    s["task_id"] if is_agent else e.originator_int,
                    change_type,
                    description[:256],
                    None if old is None else Jsonb(old),
                    None if new is None else Jsonb(new),
                    e.timestamp,
                    s.get("operator"),
                    e.originator_int if is_agent else None,
                    e.timestamp,
                )
            )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO deduction_task_history (id, deduction_task_id, change_type,"
                " change_description, old_value, new_value, change_time, operator,"
                " agent_execution_id, create_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                rows,
            )


class HistoryView(Protocol):
    """The queries the API makes of deduction_task_history."""

    async def of_task(self, task_id: int) -> list[Row] | None: ...


_QUERY = sql.SQL(
    "SELECT {} FROM deduction_task_history WHERE deduction_task_id = %s ORDER BY id"
).format(sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS)))
_TASK_EXISTS = "SELECT 1 FROM deduction_task WHERE id = %s"


class PostgresHistoryView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def of_task(self, task_id: int) -> list[Row] | None:
        """The task's changes, oldest first; None when there is no such task."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_TASK_EXISTS, [task_id])
            if await cur.fetchone() is None:
                return None
            return await fetch_all(conn, _QUERY, [task_id])
