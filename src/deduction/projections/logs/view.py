"""Log pages by keyset (`after_id`), never OFFSET, with an exact total.

With a minimum level the page is a UNION ALL of one index range per level
(agent_execution_id|deduction_task_id, level_no, id), each already ordered
and limited, merged and limited again: a few index probes whatever the size
of the table, where `level_no >= X ORDER BY id` may walk many rows of the
levels below X. The total comes from agent_execution_log_count (kept by the
projection) unless a time filter asks for a real count.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from deduction.domain.logs import LEVELS
from deduction.projections.base import Row
from deduction.projections.logs.table import READ_COLUMNS

Scope = Literal["agent_execution_id", "deduction_task_id"]
LEVEL_NUMBERS = sorted(LEVELS.values())
_SOME_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # only whether a bound is given shapes the SQL
_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, READ_COLUMNS))


@dataclass(frozen=True)
class LogFilter:
    min_level: int = LEVEL_NUMBERS[0]
    start: datetime | None = None
    """Inclusive lower bound on the line's timestamp."""
    end: datetime | None = None
    """Exclusive upper bound on the line's timestamp."""
    after_id: int | None = None
    limit: int = 100
    newest_first: bool = True

    @property
    def has_time_range(self) -> bool:
        return self.start is not None or self.end is not None


def _conditions(scope: Scope, f: LogFilter, with_cursor: bool) -> list[sql.Composable]:
    conds: list[sql.Composable] = [sql.SQL("{} = %(ident)s").format(sql.Identifier(scope))]
    if f.start is not None:
        conds.append(sql.SQL('"timestamp" >= %(start)s'))
    if f.end is not None:
        conds.append(sql.SQL('"timestamp" < %(end)s'))
    if with_cursor and f.after_id is not None:
        conds.append(sql.SQL("id < %(after)s" if f.newest_first else "id > %(after)s"))
    return conds


def page_query(scope: Scope, f: LogFilter) -> str:
    """The page's SQL, rendered once per shape of filter (the hot path of log reads)."""
    return _page_query(
        scope, f.min_level, f.start is not None, f.end is not None, f.after_id is not None,
        f.newest_first,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _page_query(
    scope: Scope, min_level: int, start: bool, end: bool, after: bool, newest_first: bool
) -> str:
    f = LogFilter(
        min_level=min_level,
        start=_SOME_TIME if start else None,
        end=_SOME_TIME if end else None,
        after_id=1 if after else None,
        newest_first=newest_first,
    )
    return _compose_page_query(scope, f).as_string(None)


def _compose_page_query(scope: Scope, f: LogFilter) -> sql.Composed:
    order = sql.SQL("DESC" if f.newest_first else "ASC")
    conds = _conditions(scope, f, with_cursor=True)
    if f.min_level <= LEVEL_NUMBERS[0]:
        return sql.SQL(
            "SELECT {cols} FROM agent_execution_log WHERE {where}"
            " ORDER BY id {order} LIMIT %(limit)s"
        ).format(cols=_COLUMNS, where=sql.SQL(" AND ").join(conds), order=order)
    branches = [
        sql.SQL(
            "(SELECT {cols} FROM agent_execution_log WHERE {where} AND level_no = {level}"
            " ORDER BY id {order} LIMIT %(limit)s)"
        ).format(
            cols=_COLUMNS,
            where=sql.SQL(" AND ").join(conds),
            level=sql.Literal(level),
            order=order,
        )
        for level in LEVEL_NUMBERS
        if level >= f.min_level
    ]
    return sql.SQL("SELECT * FROM ({union}) AS lines ORDER BY id {order} LIMIT %(limit)s").format(
        union=sql.SQL(" UNION ALL ").join(branches), order=order
    )


def total_query(scope: Scope, f: LogFilter) -> str:
    return _total_query(scope, f.start is not None, f.end is not None)


@functools.lru_cache(maxsize=32)
def _total_query(scope: Scope, start: bool, end: bool) -> str:
    f = LogFilter(start=_SOME_TIME if start else None, end=_SOME_TIME if end else None)
    return _compose_total_query(scope, f).as_string(None)


def _compose_total_query(scope: Scope, f: LogFilter) -> sql.Composed:
    if not f.has_time_range:
        return sql.SQL(
            "SELECT coalesce(sum(lines), 0) FROM agent_execution_log_count"
            " WHERE {} = %(ident)s AND level_no >= %(min_level)s"
        ).format(sql.Identifier(scope))
    conds = _conditions(scope, f, with_cursor=False)
    conds.append(sql.SQL("level_no >= %(min_level)s"))
    return sql.SQL("SELECT count(*) FROM agent_execution_log WHERE {}").format(
        sql.SQL(" AND ").join(conds)
    )


@dataclass(frozen=True)
class LogLines:
    total: int
    """Lines matching the filters (level, times), whatever the cursor."""
    rows: list[Row]
    next_cursor: int | None
    """The id to pass as `after_id` for the next page; None when this page is the last."""


class LogView(Protocol):
    """The queries the API and the worker make of the log tables."""

    async def page(self, scope: Scope, ident: int, f: LogFilter) -> LogLines | None: ...

    async def purge_ended_before(
        self, days: int, budget_s: float, tasks_per_batch: int = 50
    ) -> int: ...


_EXISTS = {
    "agent_execution_id": "SELECT 1 FROM agent_execution WHERE id = %s",
    "deduction_task_id": "SELECT 1 FROM deduction_task WHERE id = %s",
}
_ENDED_WITH_LOGS = (
    "SELECT t.id FROM deduction_task t"
    " WHERE t.end_time < now() - make_interval(days => %s) AND EXISTS"
    " (SELECT 1 FROM agent_execution_log_count c WHERE c.deduction_task_id = t.id)"
    " LIMIT %s"
)


class PostgresLogView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def page(self, scope: Scope, ident: int, f: LogFilter) -> LogLines | None:
        """One page of lines and the exact total; None when the execution or task is unknown.

        The existence check, the page and the total go out in one pipeline: one round trip.
        """
        params = {
            "ident": ident,
            "start": f.start,
            "end": f.end,
            "after": f.after_id,
            "limit": f.limit + 1,  # one more tells whether a next page exists
            "min_level": f.min_level,
        }
        async with self._pool.connection() as conn:
            async with conn.pipeline():
                exists_cur = await conn.execute(_EXISTS[scope], [ident], prepare=True)
                page_cur = conn.cursor(row_factory=dict_row)
                await page_cur.execute(page_query(scope, f), params, prepare=True)
                total_cur = await conn.execute(total_query(scope, f), params, prepare=True)
            exists = await exists_cur.fetchone() is not None
            rows = await page_cur.fetchall()
            total_row = await total_cur.fetchone()
        if not exists:
            return None
        more = len(rows) > f.limit
        rows = rows[: f.limit]
        next_cursor = rows[-1]["id"] if more and rows else None
        return LogLines(int(total_row[0] if total_row else 0), rows, next_cursor)

    async def purge_ended_before(
        self, days: int, budget_s: float, tasks_per_batch: int = 50
    ) -> int:
        """Delete log rows (and their counts) of tasks ended more than `days` ago, in batches."""
        deadline, removed = time.monotonic() + budget_s, 0
        while time.monotonic() < deadline:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_ENDED_WITH_LOGS, [days, tasks_per_batch])
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
