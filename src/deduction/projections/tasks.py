"""TaskProjection: the deduction_task read table."""

from __future__ import annotations

from datetime import datetime

from deduction.domain import TERMINAL, DeductionTask
from deduction.projections import tables
from deduction.projections.base import EventRow, Handler, Row, RowProjection, add, copy

T = DeductionTask


def _status(row: Row, e: EventRow) -> None:
    new = e.state["new_status"]
    row["status"] = new
    if new == "running" and row["start_time"] is None:
        row["start_time"] = e.timestamp
    if new in TERMINAL:
        row["end_time"] = e.timestamp
    if new == "failed" and e.state.get("reason"):
        row["error_message"] = e.state["reason"]


def _counts(row: Row, e: EventRow) -> None:
    s = e.state
    row["total_agents"], row["completed_agents"], row["failed_agents"] = (
        s["total"],
        s["completed"],
        s["failed"],
    )


def _unreachable(row: Row, e: EventRow) -> None:
    row["engine_unreachable_since"] = datetime.fromisoformat(e.state["since"])
    row["engine_error"] = e.state["error"]


class TaskProjection(RowProjection):
    name = "tasks"
    ddl = tables.TASKS
    tables = ("deduction_task",)
    table = "deduction_task"
    json_columns = frozenset({"scheme_snapshot"})
    events = (
        T.Created,
        T.SubmissionRequested,
        T.Submitted,
        T.StatusChanged,
        T.StopRequested,
        T.StopDelivered,
        T.UpdateRequested,
        T.UpdateDelivered,
        T.AgentCountsChanged,
        T.EngineUnreachable,
        T.EngineReachable,
    )
    columns = (
        "id", "scheme_id", "env_instance_id", "name", "description", "status",
        "engine_task_id", "engine_url", "scheme_snapshot", "start_time", "end_time",
        "total_agents", "completed_agents", "failed_agents", "error_message", "create_at",
        "update_at", "created_by", "stop_requested", "stop_delivered", "pending_updates",
        "submission_attempts", "engine_unreachable_since", "engine_error", "version",
    )  # fmt: skip

    def create_row(self, e: EventRow) -> Row:
        s = e.state
        return {
            "id": s["task_id"], "scheme_id": s["scheme_id"],
            "env_instance_id": s["env_instance_id"], "name": s["name"],
            "description": s["description"], "status": "pending", "engine_task_id": None,
            "engine_url": None, "scheme_snapshot": s["scheme_snapshot"], "start_time": None,
            "end_time": None, "total_agents": len(s["execution_ids"]), "completed_agents": 0,
            "failed_agents": 0, "error_message": None, "create_at": e.timestamp,
            "created_by": s["operator"], "stop_requested": False, "stop_delivered": False,
            "pending_updates": 0, "submission_attempts": 0, "engine_unreachable_since": None,
            "engine_error": None,
        }  # fmt: skip

    def handlers(self) -> dict[str, Handler]:
        return {
            "DeductionTask.SubmissionRequested": copy(submission_attempts="$attempt"),
            "DeductionTask.Submitted": copy(engine_task_id="$engine_task_id", engine_url="$engine_url"),
            "DeductionTask.StatusChanged": _status,
            "DeductionTask.StopRequested": copy(stop_requested=True),
            "DeductionTask.StopDelivered": copy(stop_delivered=True),
            "DeductionTask.UpdateRequested": add("pending_updates", 1),
            "DeductionTask.UpdateDelivered": add("pending_updates", -1),
            "DeductionTask.AgentCountsChanged": _counts,
            "DeductionTask.EngineUnreachable": _unreachable,
            "DeductionTask.EngineReachable": copy(engine_unreachable_since=None, engine_error=None),
        }  # fmt: skip
