"""Log pages (level filter + cursor) over a 10,000,000-line table: API vs. the same SQL direct."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import psycopg
from psycopg import AsyncConnection

from bench.common import Result, scratch_database, versions
from bench.http_load import api_server
from bench.task_detail_reads import API
from deduction.projections.logs import DDL as LOG_DDL
from deduction.projections.logs.view import LogFilter, page_query, total_query
from deduction.projections.runner import all_projections, create_read_tables

LEVELS = (
    [("DEBUG", 10)] * 20
    + [("INFO", 20)] * 60
    + [("WARNING", 30)] * 14
    + [("ERROR", 40)] * 5
    + [("CRITICAL", 50)]
)
TASKS, AGENTS = 20, 10
LOG_INDEXES = [s for s in LOG_DDL if "ON agent_execution_log(" in s]


def populate(url: str, lines: int) -> list[tuple[int, list[int]]]:
    """Tasks, executions and `lines` log lines straight into the read tables (bulk load)."""
    per_exec = lines // (TASKS * AGENTS)
    layout = [
        (1_000_000 + t, [2_000_000 + t * 100 + a for a in range(AGENTS)]) for t in range(TASKS)
    ]

    async def create() -> None:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await create_read_tables(conn, all_projections())

    asyncio.run(create())
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOG_INDEXES:  # dropped for the bulk load, built once after it
            conn.execute(f"DROP INDEX IF EXISTS {statement.split()[5]}")
        for task_id, execs in layout:
            conn.execute(
                "INSERT INTO deduction_task (id, scheme_id, env_instance_id, name, status,"
                " scheme_snapshot, total_agents, create_at, update_at, version)"
                " VALUES (%s, 1234567890, 9876543210, %s, 'completed', '{}', %s, now(), now(), 1)",
                [task_id, f"logs-{task_id}", AGENTS],
            )
            for seq, eid in enumerate(execs):
                conn.execute(
                    "INSERT INTO agent_execution (id, deduction_task_id, agent_meta_id, agent_name,"
                    " agent_load, side, params, status, create_at, update_at, seq, version)"
                    " VALUES (%s, %s, 10001, 'RedTeamAgent', 'red_team_agent_v1', 'red', '{}',"
                    " 'completed', now(), now(), %s, 1)",
                    [eid, task_id, seq],
                )
        with conn.cursor().copy(
            "COPY agent_execution_log (id, agent_execution_id, deduction_task_id,"
            " timestamp, level, level_no, message, source, extra_data, create_at)"
            " FROM STDIN"
        ) as copy:
            line_id = 0
            for i in range(per_exec):
                chunk = []
                second, micro = divmod(i, 1000)
                ts = f"2025-11-12 10:{second // 60 % 60:02d}:{second % 60:02d}.{micro:03d}+00"
                for task_id, execs in layout:
                    for eid in execs:
                        line_id += 1
                        level, no = LEVELS[(line_id * 7919) % 100]
                        chunk.append(
                            f"{line_id}\t{eid}\t{task_id}\t{ts}\t{level}\t{no}\t"
                            f"agent {eid} step {i}: probing 192.168.1.{i % 255}\tnetwork_module\t\\N\t{ts}\n"
                        )
                copy.write("".join(chunk))
        conn.execute(
            "INSERT INTO agent_execution_log_count SELECT agent_execution_id, deduction_task_id,"
            " level_no, count(*) FROM agent_execution_log GROUP BY 1, 2, 3"
        )
        for statement in LOG_INDEXES:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE agent_execution_log")
    return layout


def workload(layout: list[tuple[int, list[int]]], pages: int) -> list[tuple[str, int, str, int]]:
    """(scope, id, level, pages) walks: executions at ERROR+, tasks at WARNING+, all levels."""
    walks = []
    for task_id, execs in layout[:5]:
        walks.append(("deduction_task_id", task_id, "WARNING", pages))
        walks.append(("agent_execution_id", execs[0], "ERROR", pages))
        walks.append(("agent_execution_id", execs[1], "DEBUG", pages))
    return walks


async def api_walks(base: str, walks: list[tuple[str, int, str, int]]) -> list[float]:
    lat = []
    async with aiohttp.ClientSession() as s:
        for scope, ident, level, pages in walks:
            path = (
                f"/task/{ident}/logs"
                if scope == "deduction_task_id"
                else f"/agent-execution/{ident}/logs"
            )
            cursor = None
            for _ in range(pages):
                params = {"level": level, "limit": "100"}
                if cursor is not None:
                    params["after_id"] = str(cursor)
                t = time.perf_counter()
                async with s.get(f"{base}{API}{path}", params=params) as r:
                    body = await r.json()
                lat.append(time.perf_counter() - t)
                assert r.status == 200, body
                cursor = body["data"]["next_cursor"]
                if cursor is None:
                    break
    return lat


async def direct_walks(url: str, walks: list[tuple[str, int, str, int]]) -> list[float]:
    """The API's own SQL (existence check, page, total) over one psycopg connection."""
    levels = {"DEBUG": 10, "WARNING": 30, "ERROR": 40}
    lat = []
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        for scope, ident, level, pages in walks:
            table = "deduction_task" if scope == "deduction_task_id" else "agent_execution"
            cursor = None
            for _ in range(pages):
                f = LogFilter(min_level=levels[level], after_id=cursor, limit=100)
                params: dict[str, Any] = {
                    "ident": ident,
                    "start": None,
                    "end": None,
                    "after": cursor,
                    "limit": 101,
                    "min_level": f.min_level,
                }
                t = time.perf_counter()
                await (
                    await conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", [ident])
                ).fetchone()
                rows = await (await conn.execute(page_query(scope, f), params)).fetchall()
                await (await conn.execute(total_query(scope, f), params)).fetchone()
                lat.append(time.perf_counter() - t)
                cursor = rows[99][0] if len(rows) > 100 else None
                if cursor is None:
                    break
    return lat


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] * 1000


def run(smoke: bool = False, runs: int = 3) -> Result:
    lines, pages, runs = (20_000, 5, 1) if smoke else (10_000_000, 30, runs)
    with scratch_database("logs") as url:
        started = time.perf_counter()
        layout = populate(url, lines)
        load_s = time.perf_counter() - started
        walks = workload(layout, pages)
        ours, base = [], []
        with api_server(url, demo=False) as api:
            asyncio.run(api_walks(api.base, walks))  # warm caches alike
            for _ in range(runs):
                base.append(asyncio.run(direct_walks(url, walks)))
                ours.append(asyncio.run(api_walks(api.base, walks)))
        with psycopg.connect(url) as conn:
            total = conn.execute("SELECT count(*) FROM agent_execution_log").fetchone()[0]
        ver = versions(url)
    ours_p99 = sorted(p99(x) for x in ours)[len(ours) // 2]
    base_p99 = sorted(p99(x) for x in base)[len(base) // 2]
    return Result(
        name="log_queries",
        parameters={
            "log_lines": total,
            "tasks": TASKS,
            "executions": TASKS * AGENTS,
            "page_size": 100,
            "pages_per_walk": pages,
            "walks": len(walks),
            "runs": runs,
            "walks_desc": "task logs at WARNING+, execution logs at ERROR+ and at DEBUG+, newest first, after_id cursor",
            "load_seconds": round(load_s, 1),
        },
        baseline=base_p99,
        value=ours_p99,
        unit="ms p99 per page",
        baseline_label="the same SQL (existence check, page, total) run directly with psycopg",
        target="p99 <= 20 ms and <= 2 x the direct query",
        target_met=ours_p99 <= 20 and ours_p99 <= 2 * base_p99,
        higher_is_better=False,
        extra={
            "p50_ms": sorted(statistics.median(x) * 1000 for x in ours)[len(ours) // 2],
            "baseline_p50_ms": sorted(statistics.median(x) * 1000 for x in base)[len(base) // 2],
            "pages_measured": len(ours[0]),
        },
        versions=ver,
    )
