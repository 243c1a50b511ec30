"""The admission queue's SQL (projections/queue.py) against a model of its rule, on PostgreSQL.

The rule: effective rank = min(TOP_RANK, priority rank + floor(wait / QUEUE_AGING)); the queue
is ordered by effective rank, highest first, then by creation time and id.
"""

from __future__ import annotations

import math
import random

import psycopg
import pytest

from deduction.projections.queue import TOP_RANK, effective_rank, queue_position

AGING = 300.0


def model_rank(priority_rank: int, waited: float) -> int:
    return min(TOP_RANK, priority_rank + math.floor(waited / AGING))


def waits(rng: random.Random) -> list[float]:
    """Waits on and around every period boundary, and at random."""
    edges = [k * AGING + d for k in range(TOP_RANK + 2) for d in (-0.5, 0.0, 0.5)]
    return [w for w in edges if w >= 0] + [
        rng.uniform(0, (TOP_RANK + 2) * AGING) for _ in range(40)
    ]


def test_effective_rank_matches_the_rule(db_url: str) -> None:
    rng = random.Random(7)
    cases = [(p, w) for p in range(TOP_RANK + 1) for w in waits(rng)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT v.p, v.w, {effective_rank('v')} FROM (SELECT p, w,"
            " now() - make_interval(secs => w) AS create_at, p AS priority_rank"
            " FROM unnest(%(p)s::int[], %(w)s::float8[]) AS x(p, w)) v",
            {"p": [p for p, _ in cases], "w": [w for _, w in cases], "aging": AGING},
        ).fetchall()
    assert len(rows) == len(cases)
    for p, w, rank in rows:
        assert rank == model_rank(p, w), (p, w, rank)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_queue_positions_match_the_rule(db_url: str, seed: int) -> None:
    """60 tasks, some queued, some admitted or stopped: each queued task's position is its
    place in the model's order; the others have none."""
    rng = random.Random(seed)
    tasks = []
    for i in range(60):
        waited = rng.choice([rng.uniform(0, 4 * AGING), rng.choice([0.0, AGING, 2 * AGING])])
        queued = rng.random() < 0.7
        tasks.append(
            {
                "id": 1000 + rng.randrange(10**6) * 100 + i,
                "p": rng.randrange(TOP_RANK + 1),
                "w": waited,
                "status": "pending" if queued or rng.random() < 0.5 else "running",
                "attempts": 0 if queued else 1,
                "stop": not queued and rng.random() < 0.3,
            }
        )
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        # A stand-in with the columns the queue reads, under the read table's name.
        conn.execute(
            "CREATE TEMP TABLE deduction_task (id bigint PRIMARY KEY, priority_rank smallint,"
            " create_at timestamptz, status text, submission_attempts int, stop_requested bool)"
        )
        conn.execute(
            "INSERT INTO deduction_task SELECT id, p, now() - make_interval(secs => w), s, a, st"
            " FROM unnest(%s::bigint[], %s::int[], %s::float8[], %s::text[], %s::int[],"
            " %s::bool[]) AS x(id, p, w, s, a, st)",
            [[t[k] for t in tasks] for k in ("id", "p", "w", "status", "attempts", "stop")],
        )
        rows = conn.execute(
            f"SELECT t.id, {queue_position('t')}, t.create_at FROM deduction_task t",
            {"aging": AGING},
        ).fetchall()
    created = {i: c for i, _, c in rows}
    positions = {i: pos for i, pos, _ in rows}
    waiting = [
        t for t in tasks if t["status"] == "pending" and t["attempts"] == 0 and not t["stop"]
    ]
    order = sorted(waiting, key=lambda t: (-model_rank(t["p"], t["w"]), created[t["id"]], t["id"]))
    assert len(order) > 10
    assert {t["id"]: n for n, t in enumerate(order, 1)} == {
        i: pos for i, pos in positions.items() if pos is not None
    }
    assert all(positions[t["id"]] is None for t in tasks if t not in waiting)
