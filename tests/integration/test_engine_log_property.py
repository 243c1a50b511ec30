"""Property: whatever a 4.1 Engine does that the plan allows, no log line is lost or stored twice
except where a recorded gap or a skipped-line count says so.

The worker's own code (TaskMonitor, EngineReports, the real stores) reads a reference Engine on a
loopback port, with random combinations of its knobs plus 500s and stalls; the Engine's clock is
moved by the test between polls, so an example takes about a second. The log reader alone is also
driven in-process, as the worker drives it, over twice as many Engines. The oracle is the
Engine's own record of what it emitted, compared raw (not through the reader's normalisation).
`DEDUCTION_PROPERTY_EXAMPLES` (default 50) sets the number of examples: raise it for a soak run.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection

from deduction.adapters.engine.resilience import CircuitBreaker, RetryPolicy
from deduction.application.services import Services
from tests.support.engine import EngineClock, drain, live_engine, monitor_for
from tests.support.log_reader import AgentRecord, Window, check_agent, read_in_process
from tests.support.logs import stored_multiset
from tests.support.plan import create_task, new_task
from tests.support.waits import settled

EXAMPLES = int(os.environ.get("DEDUCTION_PROPERTY_EXAMPLES", "50"))
IN_PROCESS_EXAMPLES = 2 * EXAMPLES
settings.register_profile(
    "engine-logs",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,  # the same budget, new examples each run, under CI=true too
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
STEP = 0.1  # Engine seconds between two polls (the worker's own polls cost real time)
IN_PROCESS_STEP = 0.05
POLLS = 400
TIMEOUT = 0.2  # ENGINE_TIMEOUT: a stall lasts longer
STALL = 0.3


def knobs(longest: float) -> st.SearchStrategy[dict[str, Any]]:
    """Random Engines whose agents run at most `longest` seconds (of the Engine's clock)."""
    return st.fixed_dictionaries(
        {
            "seed": st.integers(0, 10**6),
            "page_cap": st.sampled_from([0, 5, 7, 13, 40]),
            "since_inclusive": st.booleans(),
            "since_resolution": st.sampled_from(["us", "us", "s"]),
            "ts_resolution": st.sampled_from(["us", "ms", "ms", "s"]),
            "log_rate": st.floats(40, 300),
            "collide_rate": st.sampled_from([0.0, 0.2, 0.5]),
            "duplicate_rate": st.sampled_from([0.0, 0.05, 0.2]),
            "malformed_rate": st.sampled_from([0.0, 0.0, 0.05, 0.2]),
            "zero_time_rate": st.sampled_from([0.0, 0.0, 0.05, 0.2]),
            "seq_restart": st.booleans(),
            "extras": st.booleans(),
            "burst": st.sampled_from([0, 0, 4, 12, 30]),
            "fail_rate": st.sampled_from([0.0, 0.0, 0.3]),
            "error_rate": st.sampled_from([0.0, 0.1, 0.2]),
            "stall_rate": st.sampled_from([0.0, 0.0, 0.05]),
            "duration_min": st.floats(0.05, longest / 2),
            "duration_max": st.floats(longest / 2, longest),
        }
    )


async def _agent_record(
    conn: AsyncConnection[Any], eid: int, emitted: list[dict[str, Any]]
) -> AgentRecord:
    """What is stored for one execution: its lines, its skipped count, its gap windows."""
    stored = await stored_multiset(conn, eid)
    cur = await conn.execute(
        "SELECT log_lines_skipped, log_gaps FROM agent_execution WHERE id = %s", [eid]
    )
    row = await cur.fetchone()
    assert row is not None
    cur = await conn.execute(
        "SELECT new_value FROM deduction_task_history WHERE agent_execution_id = %s"
        " AND change_type = 'log_gap' AND new_value ? 'start'",
        [eid],
    )
    windows = [
        Window(datetime.fromisoformat(v["start"]), datetime.fromisoformat(v["end"]), v["lines"])
        for (v,) in await cur.fetchall()
    ]
    assert row[1] == len(windows), "every gap counted is in the history"
    return AgentRecord(emitted, stored, row[0], windows)


async def _one_run(services: Services, knobs: dict[str, Any], agents: int) -> None:
    async with live_engine(stall_seconds=STALL, start_delay=0.05, **knobs) as live:
        clock = EngineClock(live.engine.sim.clock())
        live.engine.sim.clock = clock
        breaker = CircuitBreaker(cooldown=0.02)  # polls follow each other without a pause
        retry = RetryPolicy(base=0.005, cap=0.02)  # a retried call waits milliseconds, not s
        async with monitor_for(services, live.url, timeout=TIMEOUT, breaker=breaker,
                               retry=retry) as monitor:  # fmt: skip
            params = [{"n": i} for i in range(agents)]
            task_id = await services.run_sync(
                create_task, services.app, new_task(f"prop_{uuid4().hex[:12]}", params)
            )
            outcome = None
            for _ in range(POLLS):
                clock.now += STEP
                if outcome is None:  # not submitted yet (a poll has nothing to ask about)
                    await monitor.submit_task(task_id)  # again, as the sweep would
                outcome = await monitor.poll_task(task_id)
                if outcome is not None and outcome.status in ("completed", "failed", "stopped"):
                    break
            else:
                raise AssertionError(f"task {task_id} did not end within {POLLS} polls")
            await drain(monitor, task_id)
        await settled(services)
        task = services.app.get_task(task_id)
        emitted = live.emitted(task.engine_task_id)
        assert live.engine.stats["runs"] == 1, "one Engine submission per task"
    numbered = knobs["extras"] or knobs["seq_restart"]
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        for eid in task.execution_ids:
            lines = emitted[services.app.get_execution(eid).engine_agent_id]
            check_agent(await _agent_record(conn, eid, lines), numbered)


@settings(settings.get_profile("engine-logs"))
@given(knobs=knobs(0.5), agents=st.integers(1, 2))
async def test_every_line_is_stored_once_or_accounted_for(
    services: Services, knobs: dict[str, Any], agents: int
) -> None:
    """Every emitted line is stored exactly once, or counted: as skipped when sent broken, or
    inside a recorded gap (no more lines than the gap says; exactly as many when numbered);
    every task ends after one submission."""
    note(f"knobs={knobs} agents={agents}")
    await _one_run(services, knobs, agents)


@settings(settings.get_profile("engine-logs"), max_examples=IN_PROCESS_EXAMPLES)
@given(knobs=knobs(0.9), agents=st.integers(1, 2))
def test_the_reader_alone_stores_every_line_once_or_accounts_for_it(
    knobs: dict[str, Any], agents: int
) -> None:
    """The same property for the log reader alone, driven in-process as the worker drives it
    (no HTTP, no database): cheap, so many more Engines per run."""
    note(f"knobs={knobs} agents={agents}")
    for record in read_in_process(knobs, agents, step=IN_PROCESS_STEP, polls=POLLS):
        check_agent(record, knobs["extras"] or knobs["seq_restart"])
