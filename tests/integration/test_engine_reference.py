"""The reference Engine: deterministic by seed, faithful to 4.1, and its fault knobs bite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deduction.adapters.engine import HttpEngine, RetryPolicy, engine_session
from deduction.application.ports import EngineRejectedError, EngineUnavailableError
from deduction.reference_engine.server import ReferenceEngine
from deduction.reference_engine.simulation import Knobs, Simulation
from tests.support.engine import LiveEngine, live_engine

AGENTS = {"agents": [{"agent_name": "red", "params": {}}, {"agent_name": "blue", "params": {}}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_762_943_400.0

    def __call__(self) -> float:
        return self.now


def _run(seed: int) -> list[list[dict[str, object]]]:
    clock = Clock()
    sim = Simulation(Knobs(seed=seed, duration_min=5, duration_max=9, log_rate=5, fail_rate=0.5),
                     clock)  # fmt: skip
    engine_task_id, _ = sim.submit(AGENTS, "key")
    states = []
    for _ in range(12):
        clock.now += 1
        status = sim.task_status(engine_task_id)
        for agent in status["agents"]:  # ids differ between Engine starts, by design
            agent["engine_agent_id"] = agent["engine_agent_id"].replace(sim.tag, "TAG")
        states.append(status)
    return [sim.logs(a.id, None, None) for a in sim.tasks[engine_task_id].agents] + [states]


def test_the_same_seed_gives_the_same_runs() -> None:
    assert _run(3) == _run(3)
    assert _run(3) != _run(4)


def test_run_ids_are_never_reused_by_a_restarted_engine() -> None:
    """A new Engine (same seed, same clock) numbers its runs apart from the old one's."""
    clock = Clock()
    old = {Simulation(Knobs(), clock).submit(AGENTS, None)[0] for _ in range(50)}
    assert len(old) == 50
    assert Simulation(Knobs(), clock).submit(AGENTS, None)[0] not in old


def _history(engine: ReferenceEngine, run: str) -> tuple[object, ...]:
    sim = engine.sim
    return sim.task_status(run), [sim.logs(a.id, None, None) for a in sim.tasks[run].agents]


def test_runs_survive_a_restart_with_a_state_dir(tmp_path: Path) -> None:
    """Submit, update, stop and restart are journaled; a restarted Engine replays them and
    answers exactly as before, and goes on numbering runs without reuse."""
    clock = Clock()
    knobs = Knobs(duration_min=20, duration_max=20, log_rate=5, start_delay=0, fail_rate=0)
    first = ReferenceEngine(knobs, tmp_path)
    first.sim.clock = clock
    run, _ = first.submit(AGENTS, "key-1")
    other, _ = first.submit(AGENTS, "key-2")
    clock.now += 3
    first.update(run, [{"engine_agent_id": f"{run}-a0", "params": {"speed": 2}}])
    clock.now += 4
    first.stop(other)
    clock.now += 30
    before = [_history(first, run), _history(first, other)]
    first.journal.close()  # type: ignore[union-attr]

    second = ReferenceEngine(Knobs(seed=9, log_rate=100), tmp_path)  # the journal's knobs win
    second.sim.clock = clock
    assert second.restored == 2
    assert [_history(second, run), _history(second, other)] == before
    assert second.submit(AGENTS, "key-1") == (run, False)
    new, created = second.submit(AGENTS, "key-3")
    assert created and new not in (run, other)


def test_an_engine_without_a_state_dir_forgets_its_runs(tmp_path: Path) -> None:
    first = ReferenceEngine(Knobs())
    run, _ = first.submit(AGENTS, None)
    assert run not in ReferenceEngine(Knobs()).sim.tasks
    assert not list(tmp_path.iterdir())


def test_since_is_inclusive_or_exclusive_as_configured() -> None:
    clock = Clock()
    sim = Simulation(Knobs(duration_min=60, duration_max=60, log_rate=50, start_delay=0), clock)
    engine_task_id, _ = sim.submit(AGENTS, None)
    clock.now += 2
    agent = sim.tasks[engine_task_id].agents[0].id
    lines = sim.logs(agent, None, None)
    middle = lines[len(lines) // 2]["timestamp"]
    exclusive = sim.logs(agent, str(middle), None)
    sim.knobs.since_inclusive = True
    inclusive = sim.logs(agent, str(middle), None)
    at_middle = sum(1 for x in lines if x["timestamp"] == middle)
    assert len(inclusive) - len(exclusive) == at_middle > 0
    assert all(x["timestamp"] > middle for x in exclusive)
    assert len(sim.logs(agent, None, 3)) == 3


@pytest.fixture
async def engine() -> AsyncIterator[tuple[LiveEngine, HttpEngine]]:
    async with live_engine(duration_min=60, duration_max=60) as live, \
            engine_session() as session:  # fmt: skip
        yield live, HttpEngine(session, live.url, 2, retry=RetryPolicy(attempts=1))


async def test_restart_and_update_refuse_what_makes_no_sense(engine) -> None:
    _live, client = engine
    engine_task_id = await client.submit(AGENTS, "k1")
    status = await client.task_status(engine_task_id)
    with pytest.raises(EngineRejectedError) as refused:
        await client.restart_agent(status.agents[0].engine_agent_id)
    assert refused.value.status == 409  # it has not failed
    await client.stop(engine_task_id)
    await client.stop(engine_task_id)  # stopping twice is fine
    with pytest.raises(EngineRejectedError, match="has ended"):
        await client.update(engine_task_id, {"agents": []})
    with pytest.raises(EngineRejectedError, match="bad since"):
        await client.agent_logs(status.agents[0].engine_agent_id, "not a time")


@pytest.mark.parametrize("knob", ["error_rate", "drop_rate"])
async def test_fault_knobs_make_the_engine_unavailable(engine, knob: str) -> None:
    live, client = engine
    live.engine.set_knobs({knob: 1.0})
    with pytest.raises(EngineUnavailableError):
        await client.submit(AGENTS, "k2")
    live.engine.set_knobs({knob: 0.0})
    assert await client.submit(AGENTS, "k2")
    with pytest.raises(ValueError):
        live.engine.set_knobs({"ts_resolution": "minutes"})
