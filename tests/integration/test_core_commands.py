"""Commands on the real event store: unique names, read-your-writes, cheap aggregates."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pytest

from deduction.adapters.event_store import event_streams_for
from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import DeductionApp, DuplicateError, UnknownReferenceError
from deduction.application.services import Services
from deduction.domain import TaskAlreadyEndedError
from deduction.domain.ids import to_uuid
from tests.support.logs import append_logs, mixed_log_lines
from tests.support.plan import new_task, seed_catalog


def test_two_concurrent_creates_with_one_name_have_exactly_one_winner(
    app: DeductionApp, db_url: str
) -> None:
    """Racing creates of one name (separate processes' apps) yield one task and one 409."""
    seed_catalog(app)
    apps = [DeductionApp(env=eventsourcing_env(db_url)) for _ in range(4)]
    barrier = Barrier(len(apps))

    def create(a: DeductionApp) -> str:
        barrier.wait()
        try:
            a.create_task(new_task("contested"), "alice")
        except DuplicateError:
            return "duplicate"
        return "created"

    try:
        with ThreadPoolExecutor(len(apps)) as pool:
            outcomes = sorted(pool.map(create, apps))
    finally:
        for a in apps:
            a.close()
    assert outcomes == ["created", "duplicate", "duplicate", "duplicate"]


def test_create_refuses_unknown_references_naming_the_field(app: DeductionApp) -> None:
    """An unknown agent_meta_id is refused with the field path and id."""
    seed_catalog(app)
    new = new_task()
    bad = type(new)(
        **{
            **new.__dict__,
            "agent_configs": [
                new.agent_configs[0],
                type(new.agent_configs[0])(99, "blue", {}),
            ],
        }
    )
    with pytest.raises(UnknownReferenceError, match=r"agent_configs\[1\]\.agent_meta_id: 99"):
        app.create_task(bad, "alice")


def test_create_copies_catalog_names_and_snapshots_the_scheme(app: DeductionApp) -> None:
    """Executions carry the agent's name and load name; the task keeps the scheme as it was."""
    seed_catalog(app)
    task = app.get_task(app.create_task(new_task(), "alice").data["task_id"])
    red, blue = (app.get_execution(e) for e in task.execution_ids)
    assert (red.agent_name, red.agent_load, red.side) == (
        "RedTeamAgent",
        "red_team_agent_v1",
        "red",
    )
    assert (blue.agent_name, blue.params) == ("BlueTeamAgent", {"defense_level": "high"})
    assert (
        task.scheme_snapshot["id"] == 1234567890 and task.scheme_snapshot["config"]["rounds"] == 10
    )


def test_update_merges_params_and_is_refused_after_the_task_ended(app: DeductionApp) -> None:
    """Given keys replace, others stay; an ended task refuses updates."""
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    red = app.get_task(task_id).execution_ids[0]
    receipt = app.update_config(task_id, [(red, {"attack_strategy": "stealth"})], "bob")
    assert receipt.data == {"updated_count": 1}
    assert app.get_execution(red).params == {
        "attack_strategy": "stealth",
        "target": "192.168.1.100",
    }
    assert len(app.get_task(task_id).pending_updates) == 1
    app.request_stop(task_id, "carol")
    with pytest.raises(TaskAlreadyEndedError):
        app.update_config(task_id, [(red, {"attack_strategy": "loud"})], "bob")


def test_loading_an_execution_costs_the_same_with_many_log_lines(app: DeductionApp) -> None:
    """Log batches live in their own stream: the execution's own stream does not grow."""
    seed_catalog(app)
    task_id = app.create_task(new_task(), "alice").data["task_id"]
    red = app.get_task(task_id).execution_ids[0]
    before = len(app.recorder.select_events(to_uuid(red)))
    append_logs(app, red, task_id, [mixed_log_lines(100, i * 100) for i in range(200)])
    assert len(app.recorder.select_events(to_uuid(red))) == before
    assert app.get_execution(red).version == before


async def test_a_command_returns_only_after_the_read_tables_include_it(
    services: Services,
) -> None:
    """Read-your-writes: create then read at once finds the task, its agents and history."""
    await services.run_sync(seed_catalog, services.app)
    for n in range(15):
        receipt = await services.command(services.app.create_task, new_task(f"ryw{n}"), "al")
        task_id = receipt.data["task_id"]
        async with services.pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM deduction_task WHERE id = %s", [task_id])
            assert await cur.fetchone() == ("pending",)
            cur = await conn.execute(
                "SELECT count(*) FROM agent_execution WHERE deduction_task_id = %s", [task_id]
            )
            assert await cur.fetchone() == (2,)
        receipt = await services.command(services.app.request_stop, task_id, "carol")
        async with services.pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM deduction_task WHERE id = %s", [task_id])
            assert await cur.fetchone() == ("stopped",)


async def test_read_your_writes_wait_is_bounded(services: Services) -> None:
    """A position no projection will reach makes the wait give up, not hang."""
    assert await services.runner.wait_for(10**12, timeout=0.2) is False
    assert await asyncio.wait_for(services.runner.wait_for(0, timeout=5), 1) is True


def test_a_stop_reads_the_task_s_executions_in_one_round_trip(app: DeductionApp) -> None:
    """With the bulk reader the service wires in, a stop of a ten-agent task reads the task
    and then all ten executions together (not one read per execution), and stops each."""
    app.bulk = event_streams_for(app)
    seed_catalog(app)
    task_id = app.create_task(new_task(params=[{"slot": i} for i in range(10)]), "alice").data[
        "task_id"
    ]
    reads = {"select_events": 0, "bulk": 0}
    select_events, load = app.recorder.select_events, app.bulk.load

    def counted_select(*args: Any, **kwargs: Any) -> Any:
        reads["select_events"] += 1
        return select_events(*args, **kwargs)

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        reads["bulk"] += 1
        return load(*args, **kwargs)

    app.recorder.select_events = counted_select  # type: ignore[method-assign]
    app.bulk.load = counted_load  # type: ignore[method-assign]
    receipt = app.request_stop(task_id, "carol")
    assert receipt.data == {"task_id": task_id, "status": "stopped", "changed": True}
    assert reads == {"select_events": 1, "bulk": 1}
    execution_ids = app.get_task(task_id).execution_ids
    assert len(execution_ids) == 10
    assert {app.get_execution(e).status for e in execution_ids} == {"stopped"}
