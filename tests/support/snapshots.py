"""A history that reaches every event type, a catch-up in small pages, and table snapshots."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from deduction.application.service import DeductionApp
from deduction.projections.runner import ProjectionRunner, all_projections
from tests.support.logs import append_logs, mixed_log_lines
from tests.support.plan import new_task, seed_catalog


def make_history(app: DeductionApp, tasks: int = 3) -> None:
    """Tasks with updates, stops, status changes and logs: every kind of event."""
    seed_catalog(app)
    for n in range(tasks):
        task_id = app.create_task(new_task(f"t{n}"), "alice").data["task_id"]
        task = app.get_task(task_id)
        red, blue = task.execution_ids
        app.update_config(task_id, [(red, {"attack_strategy": "stealth"})], "bob")
        append_logs(app, red, task_id, [mixed_log_lines(50, 0), mixed_log_lines(50, 50)])
        append_logs(app, blue, task_id, [mixed_log_lines(7, 0)])
        if n % 2:
            app.request_stop(task_id, "carol")


async def catch_up(url: str) -> None:
    """Bring every projection up to date in small pages (many transactions)."""
    runner = ProjectionRunner(url, page_size=7)
    await runner.setup()
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await runner.catch_up(conn)


async def snapshot(conn: AsyncConnection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for p in all_projections():
        for table in p.tables:
            cur = await conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            tables[table] = await cur.fetchall()
    return tables
