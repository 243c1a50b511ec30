"""The admission queue, read from deduction_task: its order, positions and Engine slots held.

A task is queued while it is pending, not yet admitted (no "submission requested") and not
stopped. It holds an Engine slot from its admission until it ends. The queue is ordered by
effective priority, highest first, then by creation: the effective priority is the task's
priority rank (low 0, normal 1, high 2) plus one for every QUEUE_AGING seconds it has waited,
capped at high's rank, so a normal task waits behind newer high ones at most QUEUE_AGING
seconds (a low one twice that) before creation order alone decides.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from psycopg_pool import AsyncConnectionPool

from deduction.domain import TERMINAL
from deduction.domain.task import PRIORITIES

TOP_RANK = len(PRIORITIES) - 1


def queued(a: str) -> str:
    """SQL: the row aliased `a` waits for admission."""
    return f"({a}.status = 'pending' AND {a}.submission_attempts = 0 AND NOT {a}.stop_requested)"


def holds_slot(a: str) -> str:
    """SQL: the row aliased `a` was admitted and has not ended."""
    return f"({a}.status IN ('pending', 'running') AND {a}.submission_attempts > 0)"


def effective_rank(a: str) -> str:
    """SQL: the row's priority rank raised by its wait (needs the `aging` parameter).

    The periods waited, floor(wait / aging) capped at TOP_RANK, are found by comparing the
    creation time with TOP_RANK fixed instants: comparisons of timestamps, where dividing the
    wait took numeric arithmetic on every row a queue position or a queue order reads.
    """
    waited = " ".join(
        f"WHEN {a}.create_at <= now() - make_interval(secs => {k} * %(aging)s) THEN {k}"
        for k in range(TOP_RANK, 0, -1)
    )
    return f"least({TOP_RANK}, {a}.priority_rank + CASE {waited} ELSE 0 END)"


def queue_position(t: str) -> str:
    """SQL: 1 for the next task to be admitted, NULL for a task that is not queued."""
    q = "q"
    # Ahead: a higher effective rank, or the same and created earlier. One row comparison
    # (ranks negated: highest first) computes each rank once per row, not twice.
    ahead = (
        f"(-{effective_rank(q)}, {q}.create_at, {q}.id)"
        f" < (-{effective_rank(t)}, {t}.create_at, {t}.id)"
    )
    return (
        f"CASE WHEN {queued(t)} THEN (SELECT count(*) + 1 FROM deduction_task {q}"
        f" WHERE {queued(q)} AND {ahead}) END"
    )


_ENDED = ", ".join(f"'{s}'" for s in sorted(TERMINAL))
_OCCUPANCY = f"""
SELECT (SELECT count(*) FROM deduction_task t WHERE {holds_slot("t")}),
       (SELECT count(*) FROM agent_execution a JOIN deduction_task t ON t.id = a.deduction_task_id
        WHERE {holds_slot("t")} AND a.status NOT IN ({_ENDED}))
"""
_HEADS = f"""
SELECT t.id, t.total_agents FROM deduction_task t WHERE {queued("t")}
ORDER BY {effective_rank("t")} DESC, t.create_at, t.id LIMIT %(limit)s
"""
_WAITING = f"""
SELECT count(*), extract(epoch FROM now() - min(t.create_at))
FROM deduction_task t WHERE {queued("t")}
"""


class Occupancy(NamedTuple):
    """Engine slots held: admitted tasks not ended, and their agents not ended."""

    tasks: int
    agents: int


class QueueHead(NamedTuple):
    id: int
    agents: int


class QueueView(Protocol):
    async def occupancy(self) -> Occupancy: ...

    async def heads(self, limit: int) -> list[QueueHead]: ...

    async def waiting(self) -> tuple[int, float]: ...


class PostgresQueueView:
    def __init__(self, pool: AsyncConnectionPool[Any], aging: float) -> None:
        self._pool, self._aging = pool, aging

    async def occupancy(self, conn: Any = None) -> Occupancy:
        async with self._conn(conn) as c:
            cur = await c.execute(_OCCUPANCY)
            row = await cur.fetchone()
        return Occupancy(int(row[0]), int(row[1])) if row else Occupancy(0, 0)

    async def heads(self, limit: int, conn: Any = None) -> list[QueueHead]:
        """The first `limit` queued tasks, in admission order."""
        async with self._conn(conn) as c:
            cur = await c.execute(_HEADS, {"aging": self._aging, "limit": limit})
            return [QueueHead(int(i), int(n)) for i, n in await cur.fetchall()]

    async def waiting(self) -> tuple[int, float]:
        """How many tasks are queued, and the seconds the oldest of them has waited."""
        async with self._pool.connection() as c:
            cur = await c.execute(_WAITING)
            row = await cur.fetchone()
        return (int(row[0]), float(row[1] or 0.0)) if row else (0, 0.0)

    def _conn(self, conn: Any) -> Any:
        if conn is not None:
            return _Borrowed(conn)
        return self._pool.connection()


class _Borrowed:
    """A connection the caller already holds (the admission lock's), used as a context."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def __aenter__(self) -> Any:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None
