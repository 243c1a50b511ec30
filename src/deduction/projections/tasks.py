"""The deduction_task read model: its table, its projection, and the queries made of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, Protocol

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from deduction.domain import TERMINAL, DeductionTask
from deduction.domain.task import DEFAULT_PRIORITY, priority_rank
from deduction.projections import agents
from deduction.projections.base import (
    EventRow,
    Handler,
    Row,
    RowProjection,
    add,
    copy,
    fetch_all,
    fetch_scalar,
    json_fields,
)
from deduction.projections.queue import effective_rank, queue_position, queued

T = DeductionTask

DDL = [
    """
    CREATE TABLE IF NOT EXISTS deduction_task (
        id bigint PRIMARY KEY,
        scheme_id bigint NOT NULL,
        env_instance_id bigint NOT NULL,
        name varchar(128) NOT NULL UNIQUE,
        description varchar(512),
        status varchar(32) NOT NULL DEFAULT 'pending',
        engine_task_id varchar(128),
        engine_url varchar(256),
        scheme_snapshot jsonb NOT NULL,
        start_time timestamptz,
        end_time timestamptz,
        total_agents integer NOT NULL DEFAULT 0,
        completed_agents integer NOT NULL DEFAULT 0,
        failed_agents integer NOT NULL DEFAULT 0,
        error_message text,
        create_at timestamptz NOT NULL,
        update_at timestamptz NOT NULL,
        created_by varchar(64),
        stop_requested boolean NOT NULL DEFAULT false,
        stop_delivered boolean NOT NULL DEFAULT false,
        pending_updates integer NOT NULL DEFAULT 0,
        submission_attempts integer NOT NULL DEFAULT 0,
        engine_unreachable_since timestamptz,
        engine_error text,
        version integer NOT NULL,
        position bigint NOT NULL DEFAULT 0,
        previous_status varchar(32),
        priority varchar(16) NOT NULL DEFAULT 'normal',
        priority_rank smallint NOT NULL DEFAULT 1
    )
    """,
    # Tables made before the stream columns existed get them here; a rebuild fills them in.
    "ALTER TABLE deduction_task ADD COLUMN IF NOT EXISTS position bigint NOT NULL DEFAULT 0",
    "ALTER TABLE deduction_task ADD COLUMN IF NOT EXISTS previous_status varchar(32)",
    (
        "ALTER TABLE deduction_task ADD COLUMN IF NOT EXISTS priority varchar(16) NOT NULL"
        " DEFAULT 'normal'"
    ),
    "ALTER TABLE deduction_task ADD COLUMN IF NOT EXISTS priority_rank smallint NOT NULL DEFAULT 1",
    # the admission queue: only the tasks waiting for admission, in creation order
    (
        "CREATE INDEX IF NOT EXISTS idx_deduction_task_queued ON deduction_task(create_at, id)"
        " WHERE status = 'pending' AND submission_attempts = 0 AND NOT stop_requested"
    ),
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_position ON deduction_task(position)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_status ON deduction_task(status)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_scheme_id ON deduction_task(scheme_id)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_create_at ON deduction_task(create_at)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_newest ON deduction_task(id DESC)",
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_status_newest ON deduction_task(status, id DESC)",
    # the worker's sweep: "ended within the last minute" without scanning every ended task
    "CREATE INDEX IF NOT EXISTS idx_deduction_task_end_time ON deduction_task(end_time)",
]

# What readers see of a task, in the order the API answers with (no bookkeeping columns).
READ_COLUMNS = (
    "id", "name", "description", "status", "scheme_id", "env_instance_id", "engine_task_id",
    "engine_url", "scheme_snapshot", "start_time", "end_time", "total_agents",
    "completed_agents", "failed_agents", "error_message", "create_at", "update_at",
    "created_by", "stop_requested", "engine_unreachable_since", "engine_error", "priority",
)  # fmt: skip
# Computed when read, after the columns: the place in the admission queue (projections/queue.py).
COMPUTED_COLUMNS = ("queue_position",)
TIME_COLUMNS = frozenset(
    {"start_time", "end_time", "create_at", "update_at", "engine_unreachable_since"}
)


def _status(row: Row, e: EventRow) -> None:
    new = e.state["new_status"]
    row["previous_status"], row["status"] = row["status"], new  # a board sees who left it
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


def _priority(row: Row, e: EventRow) -> None:
    row["priority"] = e.state["new_priority"]
    row["priority_rank"] = priority_rank(e.state["new_priority"])


class TaskProjection(RowProjection):
    name = "tasks"
    ddl = DDL
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
        T.EngineRunMissing,
        T.PriorityRaised,
    )
    columns = (
        "id", "scheme_id", "env_instance_id", "name", "description", "status",
        "engine_task_id", "engine_url", "scheme_snapshot", "start_time", "end_time",
        "total_agents", "completed_agents", "failed_agents", "error_message", "create_at",
        "update_at", "created_by", "stop_requested", "stop_delivered", "pending_updates",
        "submission_attempts", "engine_unreachable_since", "engine_error", "version",
        "position", "previous_status", "priority", "priority_rank",
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
            "engine_error": None, "previous_status": None,
            "priority": s.get("priority", DEFAULT_PRIORITY),
            "priority_rank": priority_rank(s.get("priority", DEFAULT_PRIORITY)),
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
            "DeductionTask.EngineRunMissing": _unreachable,  # shown the same way: since, why
            "DeductionTask.EngineReachable": copy(engine_unreachable_since=None, engine_error=None),
            "DeductionTask.PriorityRaised": _priority,
        }  # fmt: skip


class OpenTaskRow(NamedTuple):
    """What the worker's sweep needs to know of a task that may still have work."""

    id: int
    status: str
    submitted: bool
    admitted: bool
    stop_requested: bool
    stop_delivered: bool
    pending_updates: int
    recently_ended: bool


COUNT_CAP = 10_000
"""The task list counts at most this many matching tasks per request (more: a lower bound)."""


class TaskPageRows(NamedTuple):
    total: int  # matching tasks, counted up to COUNT_CAP
    total_is_lower_bound: bool  # more than COUNT_CAP match: `total` is COUNT_CAP
    rows: list[Row]
    next_cursor: int | None  # the last row's id when older matching tasks follow


class TaskView(Protocol):
    """The queries the API and the worker make of deduction_task."""

    async def task(self, task_id: int) -> Row | None: ...

    async def exists(self, task_id: int) -> bool: ...

    async def page(
        self, page: int, size: int, status: str | None, after_id: int | None = None
    ) -> TaskPageRows: ...

    async def detail_json(self, task_id: int) -> bytes | None: ...

    async def open_tasks(self, recent_seconds: float) -> list[OpenTaskRow]: ...


_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS))
_POSITION = sql.SQL(queue_position("t"))
# A page ranks the queue once (a window over the queued tasks, only when the page holds one),
# not once per row: a correlated count per row made a page of 100 queued tasks in a queue of
# 10,000 compare a million pairs (4 s a page).
_PAGE = sql.SQL(
    "WITH page AS (SELECT id FROM deduction_task WHERE {where} ORDER BY id DESC"
    " LIMIT %(limit)s OFFSET %(offset)s),"
    " ranked AS (SELECT q.id, row_number() OVER (ORDER BY {rank} DESC, q.create_at, q.id)"
    " AS queue_position FROM deduction_task q WHERE {queued_q}"
    " AND EXISTS (SELECT 1 FROM page JOIN deduction_task p USING (id) WHERE {queued_p}))"
    " SELECT {columns}, ranked.queue_position FROM page JOIN deduction_task t USING (id)"
    " LEFT JOIN ranked ON ranked.id = t.id ORDER BY t.id DESC"
)
_PAGE_PARTS = {
    "rank": sql.SQL(effective_rank("q")),
    "queued_q": sql.SQL(queued("q")),
    "queued_p": sql.SQL(queued("p")),
    "columns": sql.SQL(", ").join(sql.Identifier("t", c) for c in READ_COLUMNS),
}
_DETAIL_JSON = (
    sql.SQL(
        "SELECT json_build_object('code', 200, 'message', 'success', 'data', json_build_object("
        "{task}, 'queue_position', {position}, 'agent_executions', coalesce((SELECT json_agg(json_build_object({agent})"
        " ORDER BY a.seq, a.id) FROM agent_execution a WHERE a.deduction_task_id = t.id),"
        " '[]'::json)))::text FROM deduction_task t WHERE t.id = %(id)s"
    )
    .format(
        task=json_fields("t", READ_COLUMNS, TIME_COLUMNS),
        position=_POSITION,
        agent=json_fields("a", agents.READ_COLUMNS, agents.TIME_COLUMNS),
    )
    .as_string(None)
)  # rendered once: composing it per request cost a third of the CPU
_EXISTS = sql.SQL("SELECT 1 FROM deduction_task WHERE id = %s")
# An ended task the Engine ran is read once more until every agent has had its last lines
# read (agent_execution_log_drained; a poll pairs agents first if needed), for up to DRAIN_HORIZON after it ended — not only for
# `recent` seconds, which a stop delivered late (workers or Redis down meanwhile) outlasts.
DRAIN_HORIZON = 3600.0
_DUE = """(coalesce(t.end_time > now() - make_interval(secs => %(recent)s), false)
   OR (t.end_time > now() - make_interval(secs => %(horizon)s) AND EXISTS (
       SELECT 1 FROM agent_execution a WHERE a.deduction_task_id = t.id
       AND t.engine_task_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM agent_execution_log_drained d WHERE d.agent_execution_id = a.id))))"""
_OPEN_TASKS = f"""
SELECT t.id, t.status, t.engine_task_id IS NOT NULL, t.submission_attempts > 0,
       t.stop_requested, t.stop_delivered, t.pending_updates, {_DUE}
FROM deduction_task t
WHERE t.status IN ('pending', 'running')
   OR (t.status = 'stopped' AND t.stop_requested AND NOT t.stop_delivered
       AND t.engine_task_id IS NOT NULL)
   OR {_DUE}
ORDER BY t.id
"""


class PostgresTaskView:
    def __init__(self, pool: AsyncConnectionPool[Any], queue_aging: float = 300.0) -> None:
        """`queue_aging`: QUEUE_AGING, which queue positions depend on."""
        self._pool, self._aging = pool, queue_aging

    async def task(self, task_id: int) -> Row | None:
        query = sql.SQL(
            "SELECT {}, {} AS queue_position FROM deduction_task t WHERE id = %(id)s"
        ).format(_COLUMNS, _POSITION)
        async with self._pool.connection() as conn:
            rows = await fetch_all(conn, query, {"id": task_id, "aging": self._aging})
        return rows[0] if rows else None

    async def exists(self, task_id: int) -> bool:
        async with self._pool.connection() as conn:
            return bool(await fetch_scalar(conn, _EXISTS, [task_id]))

    async def page(
        self, page: int, size: int, status: str | None, after_id: int | None = None
    ) -> TaskPageRows:
        """Newest first: ids are allocated in creation order, so `id DESC` is the stable order.
        `after_id` starts below that id (keyset: as cheap on the millionth task as the first);
        the count stops at COUNT_CAP, so a page view never counts a whole large table."""
        offset = (page - 1) * size  # bounded: the API numbers at most 100 pages
        conditions = [sql.SQL("status = %(status)s")] if status else []
        counted = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        if after_id is not None:
            conditions.append(sql.SQL("id < %(after_id)s"))
        where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
        params = {"status": status, "after_id": after_id, "limit": size + 1, "offset": offset,
                  "cap": COUNT_CAP + 1, "aging": self._aging}  # fmt: skip
        count = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM deduction_task WHERE {} LIMIT %(cap)s) AS t"
        ).format(counted)
        query = _PAGE.format(where=where, **_PAGE_PARTS)
        async with self._pool.connection() as conn:
            total = int(await fetch_scalar(conn, count, params))
            rows = await fetch_all(conn, query, params)
        more = len(rows) > size
        rows = rows[:size]
        next_cursor = int(rows[-1]["id"]) if more and rows else None
        return TaskPageRows(min(total, COUNT_CAP), total > COUNT_CAP, rows, next_cursor)

    async def detail_json(self, task_id: int) -> bytes | None:
        """The whole detail response, rendered by PostgreSQL in one round trip (the hot read).

        It carries READ_COLUMNS of the task and of each agent, times in RFC 3339 UTC;
        a test compares it with the API's response Structs for every column.
        """
        async with self._pool.connection() as conn:
            params = {"id": task_id, "aging": self._aging}
            cur = await conn.execute(_DETAIL_JSON, params, prepare=True)
            row = await cur.fetchone()
        return None if row is None else row[0].encode()

    async def open_tasks(self, recent_seconds: float) -> list[OpenTaskRow]:
        """Tasks pending or running, stopped but not yet told, or ended within `recent_seconds`
        or with logs not yet read to the end (within DRAIN_HORIZON)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _OPEN_TASKS, {"recent": recent_seconds, "horizon": DRAIN_HORIZON}
            )
            return [OpenTaskRow(*row) for row in await cur.fetchall()]
