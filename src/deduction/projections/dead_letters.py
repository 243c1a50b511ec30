"""Events a projection could not apply: parked with their error, retried or skipped by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg import AsyncConnection

from deduction.projections.base import EVENTS_TABLE, Projection, event_row

log = structlog.get_logger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS projection_dead_letter (
    projection text NOT NULL,
    position bigint NOT NULL,
    event_type text NOT NULL,
    error text NOT NULL,
    status text NOT NULL DEFAULT 'parked',
    attempts integer NOT NULL DEFAULT 1,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
)
"""
MAX_ERROR_CHARS = 2000
# Lost connections and timeouts say nothing about the event: the page is retried whole.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True)
class DeadLetter:
    projection: str
    position: int
    event_type: str
    error: str
    status: str  # parked | skipped
    attempts: int
    failed_at: datetime


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


async def park(
    conn: AsyncConnection[Any], projection: str, position: int, event_type: str, error: str
) -> None:
    """Record (or record again) that `projection` could not apply the event at `position`."""
    await conn.execute(
        "INSERT INTO projection_dead_letter (projection, position, event_type, error)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (projection, position) DO UPDATE"
        " SET error = EXCLUDED.error, attempts = projection_dead_letter.attempts + 1,"
        " failed_at = now()",
        [projection, position, event_type, error],
    )
    log.error("projections.event_parked", projection=projection, position=position,
              event_type=event_type, error=error)  # fmt: skip


async def dead_letters(
    conn: AsyncConnection[Any], *, parked_only: bool = False
) -> list[DeadLetter]:
    cur = await conn.execute(
        "SELECT projection, position, event_type, error, status, attempts, failed_at"
        " FROM projection_dead_letter WHERE status = 'parked' OR NOT %s"
        " ORDER BY position, projection",
        [parked_only],
    )
    return [DeadLetter(*row) for row in await cur.fetchall()]


async def parked_counts(conn: AsyncConnection[Any]) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT projection, count(*) FROM projection_dead_letter WHERE status = 'parked'"
        " GROUP BY projection"
    )
    return {name: int(n) for name, n in await cur.fetchall()}


async def forget(conn: AsyncConnection[Any], projection: str) -> None:
    """A rebuild tries every event again: its earlier letters no longer hold."""
    await conn.execute("DELETE FROM projection_dead_letter WHERE projection = %s", [projection])


async def skip(
    conn: AsyncConnection[Any], position: int, names: Sequence[str] = ()
) -> dict[str, bool]:
    """Leave the event unapplied for good (until a rebuild); the letter stays, marked skipped."""
    cur = await conn.execute(
        "UPDATE projection_dead_letter SET status = 'skipped' WHERE position = %s"
        " AND (projection = ANY(%s) OR cardinality(%s::text[]) = 0) RETURNING projection",
        [position, list(names), list(names)],
    )
    return {name: True for (name,) in await cur.fetchall()}


async def retry(
    conn: AsyncConnection[Any], position: int, projections: Sequence[Projection]
) -> dict[str, bool]:
    """Apply the parked event at `position` again, for each of `projections` holding it.

    It is applied on top of the current rows, after the events that followed it: exact
    for the log and history tables; for a row table a rebuild is the exact repair.
    """
    parked = {d.projection for d in await dead_letters(conn) if d.position == position}
    done: dict[str, bool] = {}
    for projection in projections:
        if projection.name in parked:
            done[projection.name] = await _retry_one(conn, position, projection)
    return done


async def _retry_one(conn: AsyncConnection[Any], position: int, projection: Projection) -> bool:
    async with conn.transaction():
        await conn.execute(
            "SELECT 1 FROM projection_tracking WHERE name = %s FOR UPDATE", [projection.name]
        )
        cur = await conn.execute(
            f"SELECT notification_id, originator_id, originator_version, topic, state"
            f" FROM {EVENTS_TABLE} WHERE notification_id = %s",
            [position],
        )
        stored = await cur.fetchone()
        if stored is None:
            raise LookupError(f"no event at position {position}")
        topics = projection.topics()
        failure = await apply_alone(conn, projection, stored, topics)
        if failure is not None:
            await park(conn, projection.name, position, topics.get(stored[3], stored[3]), failure)
            return False
        await conn.execute(
            "DELETE FROM projection_dead_letter WHERE projection = %s AND position = %s",
            [projection.name, position],
        )
        log.info("projections.event_retried", projection=projection.name, position=position)
        return True


async def apply_alone(
    conn: AsyncConnection[Any],
    projection: Projection,
    stored: tuple[Any, ...],
    topics: dict[str, str],
) -> str | None:
    """Apply one stored event inside a savepoint; the error text when it cannot be applied."""
    try:
        async with conn.transaction():
            await projection.apply(conn, [event_row(stored, topics)])
    except TRANSIENT:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the event does, the rest goes on
        return describe(e)
    return None


async def apply_one_by_one(
    conn: AsyncConnection[Any],
    projection: Projection,
    stored: Sequence[tuple[Any, ...]],
    topics: dict[str, str],
) -> int:
    """Apply a page that failed whole, event by event, parking those that fail alone."""
    applied = 0
    for row in stored:
        failure = await apply_alone(conn, projection, row, topics)
        if failure is None:
            applied += 1
        else:
            await park(conn, projection.name, row[0], topics.get(row[3], row[3]), failure)
    return applied
