"""Read-side SQL over the read tables; never loads an aggregate."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from deduction.adapters.http import views

Row = dict[str, Any]
Conn = AsyncConnection[Any]

_TASK = sql.SQL(", ").join(map(sql.Identifier, views.columns(views.Task)))
_AGENT = sql.SQL(", ").join(map(sql.Identifier, views.columns(views.AgentExecution)))
_HISTORY = sql.SQL(", ").join(map(sql.Identifier, views.columns(views.HistoryEntry)))
CATALOG_TABLES = {
    views.AgentMeta: "catalog_agent_meta",
    views.Scheme: "catalog_scheme",
    views.EnvInstance: "catalog_env_instance",
}


async def _all(conn: Conn, query: sql.Composable, params: Any = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _one(conn: Conn, query: sql.Composable, params: Any = None) -> Row | None:
    rows = await _all(conn, query, params)
    return rows[0] if rows else None


async def _scalar(conn: Conn, query: sql.Composable, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def task(conn: Conn, task_id: int) -> Row | None:
    return await _one(
        conn, sql.SQL("SELECT {} FROM deduction_task WHERE id = %s").format(_TASK), [task_id]
    )


async def task_exists(conn: Conn, task_id: int) -> bool:
    query = sql.SQL("SELECT 1 FROM deduction_task WHERE id = %s")
    return bool(await _scalar(conn, query, [task_id]))


async def task_page(
    conn: Conn, page: int, size: int, status: str | None
) -> tuple[int, list[Row]]:
    """Newest first: ids are allocated in creation order, so `id DESC` is the stable order."""
    where = sql.SQL("WHERE status = %(status)s") if status else sql.SQL("")
    params = {"status": status, "limit": size, "offset": (page - 1) * size}
    count = sql.SQL("SELECT count(*) FROM deduction_task {}").format(where)
    total = await _scalar(conn, count, params)
    rows = await _all(
        conn,
        sql.SQL(
            "SELECT {} FROM deduction_task {} ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s"
        ).format(_TASK, where),
        params,
    )
    return int(total), rows


async def executions(conn: Conn, task_id: int, status: str | None = None) -> list[Row]:
    where = sql.SQL("AND status = %(status)s") if status else sql.SQL("")
    query = sql.SQL(
        "SELECT {} FROM agent_execution WHERE deduction_task_id = %(task)s {} ORDER BY seq, id"
    ).format(_AGENT, where)
    return await _all(conn, query, {"task": task_id, "status": status})


async def execution(conn: Conn, execution_id: int) -> Row | None:
    query = sql.SQL("SELECT {} FROM agent_execution WHERE id = %s").format(_AGENT)
    return await _one(conn, query, [execution_id])


async def history(conn: Conn, task_id: int) -> list[Row]:
    query = sql.SQL(
        "SELECT {} FROM deduction_task_history WHERE deduction_task_id = %s ORDER BY id"
    ).format(_HISTORY)
    return await _all(conn, query, [task_id])


def _catalog_table(view: type[Any]) -> sql.Composable:
    return sql.Identifier(CATALOG_TABLES[view])


async def catalog_entry(conn: Conn, view: type[Any], entry_id: int) -> Row | None:
    cols = sql.SQL(", ").join(map(sql.Identifier, views.columns(view)))
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(cols, _catalog_table(view))
    return await _one(conn, query, [entry_id])


async def catalog_page(
    conn: Conn, view: type[Any], page: int, size: int
) -> tuple[int, list[Row]]:
    """In id order: catalog ids are chosen by whoever registers the entry."""
    table = _catalog_table(view)
    cols = sql.SQL(", ").join(map(sql.Identifier, views.columns(view)))
    total = await _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(table))
    rows = await _all(
        conn,
        sql.SQL("SELECT {} FROM {} ORDER BY id LIMIT %s OFFSET %s").format(cols, table),
        [size, (page - 1) * size],
    )
    return int(total), rows


def _json_fields(view: type[Any], alias: str) -> sql.Composable:
    """`'name', alias.name, ...` for json_build_object, times in the API's RFC 3339 shape."""
    parts: list[sql.Composable] = []
    for name, kind in zip(view.__struct_fields__, view.__annotations__.values()):
        column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        if "Timestamp" in str(kind):
            column = sql.SQL(
                "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            ).format(column)
        parts.append(sql.SQL("{}, {}").format(sql.Literal(name), column))
    return sql.SQL(", ").join(parts)


_TASK_DETAIL_JSON = sql.SQL(
    "SELECT json_build_object('code', 200, 'message', 'success', 'data', json_build_object("
    "{task}, 'agent_executions', coalesce((SELECT json_agg(json_build_object({agent})"
    " ORDER BY a.seq, a.id) FROM agent_execution a WHERE a.deduction_task_id = t.id),"
    " '[]'::json)))::text FROM deduction_task t WHERE t.id = %s"
).format(
    task=_json_fields(views.Task, "t"), agent=_json_fields(views.AgentExecution, "a")
).as_string(None)  # rendered once: composing it per request cost a third of the CPU


async def task_detail_json(conn: Conn, task_id: int) -> bytes | None:
    """The whole detail response, rendered by PostgreSQL in one round trip (the hot read).

    It carries the same fields, order and time format as the `views.TaskDetail` Struct;
    a test compares the two for every column.
    """
    cur = await conn.execute(_TASK_DETAIL_JSON, [task_id], prepare=True)
    row = await cur.fetchone()
    return None if row is None else row[0].encode()
