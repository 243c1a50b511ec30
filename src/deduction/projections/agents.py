"""AgentProjection: the agent_execution read table."""

from __future__ import annotations

from deduction.domain import TERMINAL, AgentExecution
from deduction.projections import tables
from deduction.projections.base import EventRow, Handler, Row, RowProjection, copy

A = AgentExecution


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


class AgentProjection(RowProjection):
    name = "agents"
    ddl = tables.AGENTS
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
        A.Restarted,
    )
    columns = (
        "id", "deduction_task_id", "agent_meta_id", "agent_name", "agent_load", "side",
        "params", "status", "engine_agent_id", "progress", "start_time", "end_time", "result",
        "error_message", "retry_count", "max_retry", "create_at", "update_at", "seq", "version",
    )  # fmt: skip

    def create_row(self, e: EventRow) -> Row:
        s = e.state
        return {
            "id": s["execution_id"], "deduction_task_id": s["task_id"],
            "agent_meta_id": s["agent_meta_id"], "agent_name": s["agent_name"],
            "agent_load": s["agent_load"], "side": s["side"], "params": s["params"],
            "status": "pending", "engine_agent_id": None, "progress": 0, "start_time": None,
            "end_time": None, "result": None, "error_message": None, "retry_count": 0,
            "max_retry": s["max_retry"], "create_at": e.timestamp, "seq": s["seq"],
        }  # fmt: skip

    def handlers(self) -> dict[str, Handler]:
        return {
            "AgentExecution.ConfigUpdated": copy(params="$new_params"),
            "AgentExecution.EngineAgentAssigned": copy(engine_agent_id="$engine_agent_id"),
            "AgentExecution.StatusChanged": _status,
            "AgentExecution.ProgressReported": copy(progress="$progress"),
            "AgentExecution.AttemptFailed": copy(retry_count="$attempt", error_message="$error"),
            "AgentExecution.Restarted": _restarted,
        }
