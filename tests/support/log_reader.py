"""The log reader driven in-process against the reference Engine's simulation, as the worker
drives it (reads per poll, the agent's end, restarts, failed calls), and the oracle that
compares what it stored with what the Engine emitted."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec

from deduction.application.log_cursor import Cursor, Gap, ingest
from deduction.application.monitor import MAX_LOG_CALLS
from deduction.application.ports import EngineLogLine, EngineLogPage, EngineLogs
from deduction.reference_engine.simulation import ZERO_TIME, Knobs, Simulation
from tests.support.engine import FAST, EngineClock
from tests.support.logs import line_key

_logs = msgspec.json.Decoder(EngineLogs)
_line = msgspec.json.Decoder(EngineLogLine)
ENDED = ("completed", "failed", "stopped")


@dataclass
class Window:
    """A recorded gap: lines stamped in [start, end) may be missing, `lines` of them if known."""

    start: datetime
    end: datetime
    lines: int | None


@dataclass
class AgentRecord:
    """What the reader stored for one agent, and what the Engine emitted."""

    emitted: list[dict[str, Any]]
    stored: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    skipped: int = 0
    windows: list[Window] = field(default_factory=list)


def page_of(body: bytes) -> EngineLogPage:
    """A logs answer decoded as the HTTP adapter decodes it (broken lines kept as bytes)."""
    entries: list[EngineLogLine | bytes] = []
    for item in _logs.decode(body).logs:
        try:
            entries.append(_line.decode(item))
        except msgspec.DecodeError:
            entries.append(bytes(item))
    return EngineLogPage(entries)


def window_of(gap: Gap) -> Window:
    return Window(datetime.fromisoformat(gap.start), datetime.fromisoformat(gap.end), gap.lines)


def read_in_process(
    knobs: dict[str, Any],
    agents: int = 1,
    *,
    step: float = 0.05,
    polls: int = 400,
    max_retry: int = 3,
    max_lines: int = 20_000,
) -> list[AgentRecord]:
    """Run one task of `agents` agents and read their logs as the worker's polls do, the
    Engine's clock moved by `step` between polls; `error_rate` and `stall_rate` fail reads."""
    faults = random.Random(f"faults:{knobs.get('seed', 0)}")
    fail_share = knobs.get("error_rate", 0.0) + knobs.get("stall_rate", 0.0)
    settings = {k: v for k, v in {**FAST, **knobs}.items() if k not in ("error_rate", "stall_rate")}
    clock = EngineClock(1_700_000_000.0)
    sim = Simulation(Knobs(**settings), clock)
    run, _ = sim.submit({"agents": [{"agent_name": f"agent{i}"} for i in range(agents)]}, None)
    sim_agents = sim.tasks[run].agents
    cursors = [Cursor() for _ in sim_agents]
    records = [AgentRecord([]) for _ in sim_agents]
    ended = [False] * len(sim_agents)  # as the worker knew at the poll before
    retries = [0] * len(sim_agents)
    for _ in range(polls):
        clock.now += step
        status = [a.status(clock.now)[0] for a in sim_agents]
        restarted = [False] * len(sim_agents)
        for i, agent in enumerate(sim_agents):
            if status[i] == "failed" and retries[i] < max_retry and not ended[i]:
                retries[i] += 1
                sim.restart(agent.id)
                restarted[i] = True
                status[i] = agent.status(clock.now)[0]
        for i, agent in enumerate(sim_agents):
            if cursors[i].drained:
                continue
            attempt = 2 * retries[i] + restarted[i]
            cursor, complete, budget = cursors[i], False, max_lines
            for _ in range(MAX_LOG_CALLS):
                if faults.random() < fail_share:
                    break
                since = cursor.since()
                page = page_of(sim.logs_body(agent.id, since, budget))
                got = ingest(cursor, page, budget, since, ended[i], attempt)
                cursor, complete = got.cursor, got.complete
                budget -= len(got.lines)
                records[i].stored.update(line_key(x) for x in got.lines)
                records[i].skipped += got.skipped
                records[i].windows += [window_of(got.gap)] if got.gap else []
                if not got.progressed or budget <= 0:
                    break
            now_ended = status[i] in ENDED and not (
                status[i] == "failed" and retries[i] < max_retry
            )
            cursors[i] = replace(cursor, drained=now_ended and complete)
            ended[i] = now_ended
        if all(c.drained for c in cursors):
            break
    else:
        raise AssertionError(f"the logs were not drained within {polls} polls")
    for i, agent in enumerate(sim_agents):
        agent.advance(clock.now)
        records[i].emitted = [sim.render_emitted(line) for line in agent.lines]
    return records


def _effective(lines: list[dict[str, Any]]) -> list[datetime]:
    """Where each emitted line stands in time: its own, or the line before's for a zero time."""
    out, previous = [], datetime.fromisoformat(ZERO_TIME)
    for line in lines:
        if line["timestamp"] != ZERO_TIME:
            previous = datetime.fromisoformat(line["timestamp"])
        out.append(previous)
    return out


def check_agent(record: AgentRecord, numbered: bool) -> None:
    """Every emitted line is stored exactly once, or counted: as skipped when sent broken, or
    inside a recorded gap (no more lines than the gap says; exactly as many when numbered)."""
    emitted, stored, skipped, windows = (
        record.emitted,
        record.stored,
        record.skipped,
        record.windows,
    )
    effective = _effective(emitted)
    whole = [(line_key(x), at) for x, at in zip(emitted, effective) if "flaw" not in x]
    flawed = [at for x, at in zip(emitted, effective) if "flaw" in x]
    expected = Counter(key for key, _ in whole)
    assert stored - expected == Counter(), "a line stored twice, or never emitted"
    missing = expected - stored

    def window(at: datetime) -> Window | None:
        return next((w for w in windows if w.start <= at < w.end), None)

    hidden: Counter[int] = Counter()
    for key, count in missing.items():  # the same line may have been emitted more than once
        places = [w for w in (window(at) for k, at in whole if k == key) if w is not None]
        assert len(places) >= count, f"line lost outside any recorded gap: {key}"
        for w in places[:count]:
            hidden[id(w)] += 1
    flawed_outside = sum(window(at) is None for at in flawed)
    assert flawed_outside <= skipped <= len(flawed), "lines sent broken are counted as skipped"
    for w in windows:
        if w.lines is not None:
            assert hidden[id(w)] <= w.lines, "a gap holds no more lines than it says"
    if numbered and all(w.lines is not None for w in windows):
        said = sum(w.lines or 0 for w in windows)
        assert said == sum(missing.values()) + len(flawed) - skipped, "numbered gaps are exact"
