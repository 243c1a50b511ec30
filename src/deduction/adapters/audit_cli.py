"""`deduction audit ...`: verify the chain or an export file, print a checkpoint, export a task,
replay a task's timeline."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import AsyncConnection

from deduction.adapters.audit_chain import (
    checkpoint,
    create_chain_table,
    export_task,
    extend_chain,
    verify_store,
)
from deduction.adapters.audit_store import event_query, record
from deduction.application.audit import AuditEvent, EventQuery, TaskStreams, read_event
from deduction.application.audit_chain import Verdict, check_checkpoint, parse_checkpoint
from deduction.application.audit_file import rfc3339, verify_file
from deduction.domain import DeductionTask


async def _prepare(url: str) -> None:
    """The chain table exists and includes every event saved so far."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await create_chain_table(conn)
        await extend_chain(conn)


def _report(verdict: Verdict, what: str, out: IO[str]) -> int:
    if verdict.finding is not None:
        f = verdict.finding
        out.write(f"FAILED {what}: first {f.kind} at position {f.position}\n{f.message}\n")
        return 1
    out.write(
        f"OK {what}: {verdict.checked} events intact up to position {verdict.head_position}"
        f" (digest {verdict.head_digest.hex()})"
        + (f"; {verdict.unchained} newer events not chained yet" if verdict.unchained else "")
        + "\n"
    )
    return 0


async def verify(url: str, task_id: int | None, checkpoint_text: str | None,
                 out: IO[str] = sys.stdout) -> int:  # fmt: skip
    """Exit status 0 when intact, 1 at the first departure (named on `out`)."""
    mark = parse_checkpoint(checkpoint_text) if checkpoint_text else None
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await create_chain_table(conn)
        task = await _task_streams(conn, task_id) if task_id is not None else None
    if task_id is not None and task is None:
        out.write(f"task {task_id} does not exist\n")
        return 2
    with psycopg.connect(url) as conn:
        verdict = verify_store(conn, mark[0] if mark else None, task, lambda: psycopg.connect(url))
    if mark is not None:
        verdict = check_checkpoint(verdict, *mark)
    what = f"task {task_id}" if task_id is not None else "the event store"
    return _report(verdict, what + (f" up to checkpoint {mark[0]}" if mark else ""), out)


def verify_export(path: Path, out: IO[str] = sys.stdout) -> int:
    with path.open("rb") as f:
        verdict = verify_file(f)
    if not verdict.intact:
        out.write(f"FAILED {path}: {verdict.problem}\n")
        return 1
    m = verdict.manifest or {}
    out.write(f"OK {path}: {verdict.events} events of task {m.get('task_id')} match their"
              f" digests and the manifest\n")  # fmt: skip
    return 0


async def print_checkpoint(url: str, out: IO[str] = sys.stdout) -> int:
    """Chain what is new, then print POSITION:DIGEST (keep it outside the database)."""
    await _prepare(url)
    with psycopg.connect(url) as conn:
        position, head = checkpoint(conn)
    out.write(f"{position}:{head.hex()}\n")
    return 0


async def _task_streams(conn: AsyncConnection[Any], task_id: int) -> TaskStreams | None:
    cur = await conn.execute(
        "SELECT notification_id, originator_id, originator_version, topic, state"
        " FROM deduction_events WHERE originator_id = %s AND originator_version = 1",
        [DeductionTask.create_id(task_id)],
    )
    row = await cur.fetchone()
    if row is None:
        return None
    created = read_event(record(row))
    return TaskStreams(task_id, tuple(created.fields["execution_ids"]))


async def export(url: str, task_id: int, path: Path | None, out: IO[str] = sys.stdout) -> int:
    await _prepare(url)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        task = await _task_streams(conn, task_id)
        if task is None:
            out.write(f"task {task_id} does not exist\n")
            return 2
        target = path or Path(f"task-{task_id}.audit.jsonl")
        with target.open("wb") as f:
            async for line in export_task(conn, task):
                f.write(line)
    out.write(f"wrote {target}\n")
    return 0


async def replay(url: str, task_id: int, as_of: datetime | None, out: IO[str] = sys.stdout) -> int:
    """The task's events as a table: when, position, what, by whom, and the gist."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        task = await _task_streams(conn, task_id)
        if task is None:
            out.write(f"task {task_id} does not exist\n")
            return 2
        statement, params = event_query(EventQuery(limit=None, aggregate_ids=task.all_ids))
        cur = conn.cursor(binary=True)
        await cur.execute(statement, params)
        events = [read_event(record(r), full_logs=False) for r in await cur.fetchall()]
    out.write(f"{'time (UTC)':<28}{'position':>9}  {'by':<12}{'event':<34}details\n")
    for e in events:
        if as_of is not None and e.timestamp > as_of:
            continue
        out.write(f"{rfc3339(e.timestamp):<28}{e.position:>9}  {(e.operator or '-'):<12}"
                  f"{e.type:<34}{gist(e)}\n")  # fmt: skip
    return 0


def gist(e: AuditEvent) -> str:
    """One line saying what the event changed."""
    f = e.fields
    if "new_status" in f:
        extra = f.get("reason") or f.get("error")
        who = f" {f['agent_name']}" if "agent_name" in f else ""
        return f"{who.strip()} {f['old_status']} -> {f['new_status']}".strip() + (
            f" ({extra})" if extra else "")  # fmt: skip
    if "line_count" in f:
        return f"{f['line_count']} log lines of execution {f.get('execution_id')}"
    skip = {"operator", "task_id", "scheme_snapshot", "env_snapshot", "lines", "cursor"}
    text = ", ".join(f"{k}={v}" for k, v in f.items() if k not in skip)
    return text[:120]
