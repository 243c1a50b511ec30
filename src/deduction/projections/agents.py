"""The agent_execution read model: its table, its projection, and the queries made of it."""

from __future__ import annotations

from typing import Any, Protocol

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from deduction.domain import TERMINAL, AgentExecution
from deduction.projections.base import EventRow, Handler, Row, RowProjection, copy, fetch_all

A = AgentExecution

DDL = [
    """
    CREATE TABLE IF NOT EXISTS agent_execution (
        id bigint PRIMARY KEY,
        deduction_task_id bigint NOT NULL,
        agent_meta_id bigint NOT NULL,
        agent_name varchar(64) NOT NULL,
        agent_load varchar(128) NOT NULL,
        side varchar(64) NOT NULL,
        params jsonb NOT NULL,
        status varchar(32) NOT NULL DEFAULT 'pending',
        engine_agent_id varchar(128),
        progress integer NOT NULL DEFAULT 0,
        start_time timestamptz,
        end_time timestamptz,
        result jsonb,
        error_message text,
        retry_count integer NOT NULL DEFAULT 0,
        max_retry integer NOT NULL DEFAULT 3,
        log_lines_skipped integer NOT NULL DEFAULT 0,
        log_gaps integer NOT NULL DEFAULT 0,
        create_at timestamptz NOT NULL,
        update_at timestamptz NOT NULL,
        seq integer NOT NULL,
        version integer NOT NULL,
        position bigint NOT NULL DEFAULT 0
    )
    """,
    # Tables made before the stream column existed get it here; a rebuild fills it in.
    "ALTER TABLE agent_execution ADD COLUMN IF NOT EXISTS position bigint NOT NULL DEFAULT 0",
    (
        "CREATE INDEX IF NOT EXISTS idx_agent_execution_task_position"
        " ON agent_execution(deduction_task_id, position)"
    ),
    "CREATE INDEX IF NOT EXISTS idx_agent_execution_task_id ON agent_execution(deduction_task_id)",
    "CREATE INDEX IF NOT EXISTS idx_agent_execution_status ON agent_execution(status)",
    (
        "CREATE INDEX IF NOT EXISTS idx_agent_execution_task_status"
        " ON agent_execution(deduction_task_id, status)"
    ),
]

# What readers see of an agent execution, in the order the API answers with.
READ_COLUMNS = (
    "id", "deduction_task_id", "seq", "agent_meta_id", "agent_name", "agent_load", "side",
    "params", "status", "engine_agent_id", "progress", "start_time", "end_time", "result",
    "error_message", "retry_count", "max_retry", "create_at", "update_at", "log_lines_skipped",
    "log_gaps",
)  # fmt: skip
TIME_COLUMNS = frozenset({"start_time", "end_time", "create_at", "update_at"})


def _status(row: Row, e: EventRow) -> None:
    s = e.state
    new = s["new_status"]
    row["status"] = new
    if new == "running" and row["start_time"] is None:
        row["start_time"] = e.timestamp
    if new in TERMINAL:
        row["end_time"] = e.timestamp
    if s.get("result") is not None:
        row["result"] = s["result"]
    if s.get("error") is not None:
        row["error_message"] = s["error"]


def _restarted(row: Row, e: EventRow) -> None:
    row["progress"], row["end_time"] = 0, None


def _lines_skipped(row: Row, e: EventRow) -> None:
    row["log_lines_skipped"] += e.state["count"]


def _gap(row: Row, e: EventRow) -> None:
    row["log_gaps"] += 1


class AgentProjection(RowProjection):
    name = "agents"
    ddl = DDL
    tables = ("agent_execution",)
    table = "agent_execution"
    json_columns = frozenset({"params", "result"})
    events = (
        A.Created,
        A.ConfigUpdated,
        A.EngineAgentAssigned,
        A.StatusChanged,
        A.ProgressReported,
        A.AttemptFailed,
        A.RestartRequested,
        A.Restarted,
        A.LogLinesSkipped,
        A.LogGapRecorded,
    )
    columns = (
        "id", "deduction_task_id", "agent_meta_id", "agent_name", "agent_load", "side",
        "params", "status", "engine_agent_id", "progress", "start_time", "end_time", "result",
        "error_message", "retry_count", "max_retry", "log_lines_skipped", "log_gaps",
        "create_at", "update_at", "seq", "version", "position",
    )  # fmt: skip

    def create_row(self, e: EventRow) -> Row:
        s = e.state
        return {
            "id": s["execution_id"], "deduction_task_id": s["task_id"],
            "agent_meta_id": s["agent_meta_id"], "agent_name": s["agent_name"],
            "agent_load": s["agent_load"], "side": s["side"], "params": s["params"],
            "status": "pending", "engine_agent_id": None, "progress": 0, "start_time": None,
            "end_time": None, "result": None, "error_message": None, "retry_count": 0,
            "max_retry": s["max_retry"], "log_lines_skipped": 0, "log_gaps": 0,
            "create_at": e.timestamp, "seq": s["seq"],
        }  # fmt: skip

    def handlers(self) -> dict[str, Handler]:
        return {
            "AgentExecution.ConfigUpdated": copy(params="$new_params"),
            "AgentExecution.EngineAgentAssigned": copy(engine_agent_id="$engine_agent_id"),
            "AgentExecution.StatusChanged": _status,
            "AgentExecution.ProgressReported": copy(progress="$progress"),
            "AgentExecution.AttemptFailed": copy(retry_count="$attempt", error_message="$error"),
            "AgentExecution.RestartRequested": copy(),
            "AgentExecution.Restarted": _restarted,
            "AgentExecution.LogLinesSkipped": _lines_skipped,
            "AgentExecution.LogGapRecorded": _gap,
        }


class AgentView(Protocol):
    """The queries the API makes of agent_execution."""

    async def execution(self, execution_id: int) -> Row | None: ...

    async def of_task(self, task_id: int, status: str | None = None) -> list[Row] | None: ...


_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS))
_TASK_EXISTS = "SELECT 1 FROM deduction_task WHERE id = %s"


class PostgresAgentView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def execution(self, execution_id: int) -> Row | None:
        query = sql.SQL("SELECT {} FROM agent_execution WHERE id = %s").format(_COLUMNS)
        async with self._pool.connection() as conn:
            rows = await fetch_all(conn, query, [execution_id])
        return rows[0] if rows else None

    async def of_task(self, task_id: int, status: str | None = None) -> list[Row] | None:
        """The task's executions in config order; None when there is no such task."""
        where = sql.SQL("AND status = %(status)s") if status else sql.SQL("")
        query = sql.SQL(
            "SELECT {} FROM agent_execution WHERE deduction_task_id = %(task)s {} ORDER BY seq, id"
        ).format(_COLUMNS, where)
        async with self._pool.connection() as conn:
            cur = await conn.execute(_TASK_EXISTS, [task_id])
            if await cur.fetchone() is None:
                return None
            return await fetch_all(conn, query, {"task": task_id, "status": status})
