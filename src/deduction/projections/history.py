"""HistoryProjection: deduction_task_history, one row per auditable event, with its operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from deduction.domain import AgentExecution, DeductionTask
from deduction.projections import tables
from deduction.projections.base import EventRow, Projection

T, A = DeductionTask, AgentExecution
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
    ddl = tables.HISTORY
    tables = ("deduction_task_history",)
    events = (
        T.Created, T.Submitted, T.StatusChanged, T.StopRequested, T.StopDelivered,
        T.UpdateDelivered, T.EngineUnreachable, T.EngineReachable,
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
