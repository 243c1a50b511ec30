"""Baseline server: a bare Litestar + psycopg handler returning one row by primary key."""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, get
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

pool = AsyncConnectionPool(
    os.environ["DATABASE_URL"],
    min_size=4,
    max_size=10,
    open=False,
    kwargs={"autocommit": True, "row_factory": dict_row},
)


@get("/row/{row_id:int}")
async def one_row(row_id: int) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM deduction_task WHERE id = %s", [row_id])
        return await cur.fetchone()


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


async def _open() -> None:
    await pool.open()


async def _close() -> None:
    await pool.close()


app = Litestar([one_row, health], on_startup=[_open], on_shutdown=[_close])
