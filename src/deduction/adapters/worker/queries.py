"""Read-side SQL of the worker: what the sweep should enqueue, and the log retention purge."""

from __future__ import annotations

import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

_WORK = """
SELECT id, status, engine_task_id IS NOT NULL, stop_requested, stop_delivered, pending_updates,
       coalesce(end_time > now() - make_interval(secs => %(recent)s), false)
FROM deduction_task
WHERE status IN ('pending', 'running')
   OR (status = 'stopped' AND stop_requested AND NOT stop_delivered AND engine_task_id IS NOT NULL)
   OR end_time > now() - make_interval(secs => %(recent)s)
ORDER BY id
"""


def _jobs(row: tuple[Any, ...]) -> list[str]:
    _, status, submitted, stop_requested, stop_delivered, updates, recently_ended = row
    active = status in ("pending", "running")
    stop_pending = stop_requested and not stop_delivered
    jobs = []
    if status == "pending" and not submitted and not stop_requested:
        jobs.append("submit_task")
    if submitted and (active or (recently_ended and not stop_pending)):
        jobs.append("poll_task")  # an ended task: its logs are read once more, then nothing
    if submitted and stop_pending:
        jobs.append("send_stop")
    if submitted and active and updates > 0:
        jobs.append("send_update")
    return jobs


async def find_work(pool: AsyncConnectionPool[Any], recent_seconds: float) -> list[tuple[str, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(_WORK, {"recent": recent_seconds})
        rows = await cur.fetchall()
    return [(job, row[0]) for row in rows for job in _jobs(row)]


async def purge_read_logs(
    pool: AsyncConnectionPool[Any], days: int, budget_s: float, tasks_per_batch: int = 50
) -> int:
    """Delete log rows (and their counts) of tasks ended more than `days` ago, in batches."""
    deadline, removed = time.monotonic() + budget_s, 0
    while time.monotonic() < deadline:
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT t.id FROM deduction_task t"
                " WHERE t.end_time < now() - make_interval(days => %s) AND EXISTS"
                " (SELECT 1 FROM agent_execution_log_count c WHERE c.deduction_task_id = t.id)"
                " LIMIT %s",
                [days, tasks_per_batch],
            )
            ids = [r[0] for r in await cur.fetchall()]
            if not ids:
                break
            cur = await conn.execute(
                "DELETE FROM agent_execution_log WHERE deduction_task_id = ANY(%s)", [ids]
            )
            removed += cur.rowcount
            await conn.execute(
                "DELETE FROM agent_execution_log_count WHERE deduction_task_id = ANY(%s)", [ids]
            )
    return removed
