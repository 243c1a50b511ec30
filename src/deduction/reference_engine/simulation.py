"""The reference Engine's model: agents simulated lazily from elapsed time, deterministic by seed.

Nothing runs on a timer: every request first advances the agents it touches up to "now",
emitting the log lines that fell due since the last request. So 1,000 tasks of 10 agents
cost nothing while nobody asks about them.
"""

from __future__ import annotations

import random
import secrets
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import accumulate
from math import isfinite
from typing import Any

import msgspec

RESOLUTION_US = {"us": 1, "ms": 1_000, "s": 1_000_000}
_SOURCES = ["network_module", "planner", "sensor", "executor", None]
_ERRORS = [
    "target refused the connection",
    "agent crashed: out of memory",
    "timed out waiting for the environment",
    "lost contact with the simulation host",
]
_MESSAGES = {
    "DEBUG": ["tick {n}: state checksum {h:08x}", "heartbeat {n}", "queue depth {k}"],
    "INFO": ["step {n}: moved to sector {k}", "step {n}: scanning {k} hosts",
             "step {n}: objective {k} in sight", "step {n}: holding position"],
    "WARNING": ["step {n}: packet loss {k}%", "step {n}: slow response from host {k}"],
    "ERROR": ["step {n}: action {k} failed, retrying", "step {n}: host {k} unreachable"],
    "CRITICAL": ["step {n}: integrity check failed on host {k}"],
}  # fmt: skip


class Knobs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Behaviour and fault settings, changeable at run time through /admin/knobs."""

    seed: int = 0
    latency: float = 0.0  # seconds added to every Engine call
    error_rate: float = 0.0  # share of Engine calls answered 503
    drop_rate: float = 0.0  # share of Engine calls whose connection is dropped unanswered
    since_inclusive: bool = False  # `since` returns lines at that instant too
    ts_resolution: str = "ms"  # "us", "ms" or "s": coarser means more colliding timestamps
    log_rate: float = 2.0  # lines per second per running agent
    level_mix: dict[str, float] = msgspec.field(
        default_factory=lambda: {"DEBUG": 1, "INFO": 6, "WARNING": 2, "ERROR": 1, "CRITICAL": 0.2}
    )
    collide_rate: float = 0.2  # share of lines stamped with the previous line's timestamp
    duplicate_rate: float = 0.05  # share of lines that repeat the previous line exactly
    fail_rate: float = 0.1  # share of agent attempts that fail
    duration_min: float = 20.0  # seconds an agent runs (uniform between min and max)
    duration_max: float = 60.0
    start_delay: float = 0.5  # at most this many seconds pending before running
    extras: bool = False  # add optional fields: agent `ref` and `attempt`, log `seq`
    restart: bool = True  # offer POST /engine/agent/{id}/restart
    reject_submissions: str | None = None  # answer every submission 422 with this message
    reject_updates: str | None = None  # answer every update 422 with this message
    # What real Engines do that 4.1 allows (each off by default):
    page_cap: int = 0  # at most this many lines per logs answer, unannounced (0: no cap)
    since_resolution: str = "us"  # "s": `since` is cut to the whole second before comparing
    malformed_rate: float = 0.0  # share of lines sent broken (null time, numeric level, ...)
    zero_time_rate: float = 0.0  # share of lines stamped 0001-01-01T00:00:00Z (Go's zero time)
    seq_restart: bool = False  # number lines (`seq`) from 0 again on every agent attempt
    burst: int = 0  # lines emitted at one instant when an attempt starts running
    stall_rate: float = 0.0  # share of Engine calls that stall `stall_seconds` before answering
    stall_seconds: float = 30.0
    # Not part of 4.1: the Engine's load, for admission (GET /engine/load).
    load: bool = True  # offer GET /engine/load (False: 404, as an Engine of 4.1 alone)
    cpu_percent: float = 10.0  # the CPU use it reports
    memory_percent: float = 20.0  # the memory use it reports


_wire_json = msgspec.json.Encoder()
_SECONDS: dict[int, str] = {}  # whole second -> "YYYY-MM-DDTHH:MM:SS" (lines share seconds)


def format_us(us: int, resolution: str) -> str:
    """RFC 3339 UTC with `Z`, to the resolution's precision (integer arithmetic, exact)."""
    second, fraction = divmod(us, 1_000_000)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()
        _SECONDS[second] = prefix
    if resolution == "ms":
        return f"{prefix}.{fraction // 1000:03d}Z"
    if resolution == "us":
        return f"{prefix}.{fraction:06d}Z"
    if resolution == "s":
        return prefix + "Z"
    raise KeyError(resolution)


def parse_us(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_LEVEL_TABLE: list[Any] = [None, (), [], 0.0]  # the mix it was made from (held), levels, sums


def _level_table(mix: dict[str, float]) -> tuple[tuple[str, ...], list[float], float]:
    """Levels and cumulative weights of a level mix, as random.choices would compute them."""
    if _LEVEL_TABLE[0] is not mix:  # knobs are replaced, never changed in place
        levels, weights = zip(*mix.items())
        cum_weights = list(accumulate(weights))
        total = cum_weights[-1] + 0.0
        if total <= 0.0 or not isfinite(total):
            raise ValueError("level_mix weights must add up to a positive number")
        _LEVEL_TABLE[:] = [mix, levels, cum_weights, total]
    return _LEVEL_TABLE[1], _LEVEL_TABLE[2], _LEVEL_TABLE[3]


# A stored line: (timestamp µs, level, message, source, extra, seq, resolution, flaw)
Line = tuple[int, str, str, str | None, dict[str, Any] | None, int, str, str | None]
MALFORMED = ("null_timestamp", "numeric_level", "text_seq", "invalid_utf8")
ZERO_TIME = "0001-01-01T00:00:00Z"


class SimAgent:
    """One agent: its attempts, its params and every line it has emitted so far."""

    def __init__(self, engine_agent_id: str, ref: Any, name: str, params: dict[str, Any],
                 key: str, knobs: Knobs, now: float) -> None:  # fmt: skip
        self.id, self.ref, self.name, self.params = engine_agent_id, ref, name, dict(params)
        self._key, self.knobs = key, knobs
        self.lines: list[Line] = []
        self.attempt = 0
        self.stopped_at: float | None = None
        self._start_attempt(now)

    def _start_attempt(self, now: float) -> None:
        k = self.knobs
        self.attempt += 1
        self.rng = random.Random(f"{k.seed}:{self._key}:{self.attempt}")
        self.running_at = now + self.rng.uniform(0, k.start_delay)
        self.duration = max(0.01, self.rng.uniform(k.duration_min, k.duration_max))
        self.fails = self.rng.random() < k.fail_rate
        share = self.rng.uniform(0.3, 0.9) if self.fails else 1.0
        self.ends_at = self.running_at + self.duration * share
        self.error = self.rng.choice(_ERRORS) if self.fails else None
        self.result = None if self.fails else {"score": self.rng.randint(50, 100),
                                               "steps": self.rng.randint(10, 500)}  # fmt: skip
        self._next = self.running_at
        self._step = 0
        self._closed = False
        self._first_seq = len(self.lines)
        self._burst_due = k.burst > 0

    # -- time --------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Emit every line due up to `now` (and the closing line once the attempt ended)."""
        if self._closed:
            return
        horizon = min(now, self.ends_at, self.stopped_at or now)
        rate = self.knobs.log_rate
        if self._burst_due and self.running_at <= horizon:
            self._burst_due = False
            for i in range(self.knobs.burst):
                self._emit(self.running_at, "INFO", f"{self.name} warm-up {i}", "engine",
                           reuse_ts=i > 0)  # fmt: skip
        while rate > 0 and self._next <= horizon:
            self._emit_step(self._next)
            self._next += self.rng.expovariate(rate)
        if self.stopped_at is not None and self.stopped_at < self.ends_at:
            return  # the stop wrote its own line
        if now >= self.ends_at:
            self._closed = True
            if self.fails:
                self._emit(self.ends_at, "ERROR", f"{self.name} failed: {self.error}", "executor")
            else:
                done = f"{self.name} completed: {self.result}"
                self._emit(self.ends_at, "INFO", done, "executor")

    def _emit_step(self, at: float) -> None:
        k, rng = self.knobs, self.rng
        if self.lines and rng.random() < k.duplicate_rate:
            last = self.lines[-1]
            self.lines.append(last[:5] + (self._seq(), last[6], last[7]))
            return
        self._step += 1
        levels, cum_weights, total = _level_table(k.level_mix)
        # what rng.choices(levels, weights)[0] does, with the sums made once per mix
        level = levels[bisect_right(cum_weights, rng.random() * total, 0, len(levels) - 1)]
        template = rng.choice(_MESSAGES.get(level, _MESSAGES["INFO"]))
        message = template.format(n=self._step, k=rng.randint(1, 64), h=rng.getrandbits(32))
        source = rng.choice(_SOURCES)
        extra = {"step": self._step} if rng.random() < 0.3 else None
        same_ts = self.lines and rng.random() < k.collide_rate
        self._emit(at, level, message, source, extra, reuse_ts=bool(same_ts))

    def _emit(self, at: float, level: str, message: str, source: str | None,
              extra: dict[str, Any] | None = None, reuse_ts: bool = False) -> None:  # fmt: skip
        res = self.knobs.ts_resolution
        step = RESOLUTION_US[res]
        us = int(at * 1_000_000) // step * step
        if self.lines:
            us = max(us, self.lines[-1][0])  # never behind a line already emitted
            if reuse_ts:
                us = self.lines[-1][0]
        self.lines.append((us, level, message, source, extra, self._seq(), res, self._flaw()))

    def _seq(self) -> int:
        return len(self.lines) - (self._first_seq if self.knobs.seq_restart else 0)

    def _flaw(self) -> str | None:
        """How this line is sent broken, if it is (decided once, from the line's number)."""
        k = self.knobs
        if k.malformed_rate <= 0 and k.zero_time_rate <= 0:
            return None
        dice = random.Random(f"{k.seed}:{self._key}:flaw:{len(self.lines)}").random()
        if dice < k.malformed_rate:
            return MALFORMED[len(self.lines) % len(MALFORMED)]
        return "zero_time" if dice < k.malformed_rate + k.zero_time_rate else None

    def note(self, now: float, message: str) -> None:
        """An event line written now (update, stop, restart)."""
        self.advance(now)
        self._emit(now, "INFO", message, "engine")

    # -- state -------------------------------------------------------------------------------

    def status(self, now: float) -> tuple[str, int]:
        if self.stopped_at is not None and self.stopped_at < self.ends_at:
            return "stopped", self._progress(self.stopped_at)
        if now < self.running_at:
            return "pending", 0
        if now < self.ends_at:
            return "running", min(99, self._progress(now))
        return ("failed", self._progress(self.ends_at)) if self.fails else ("completed", 100)

    def _progress(self, at: float) -> int:
        return max(0, min(100, int(100 * (at - self.running_at) / self.duration)))

    def stop(self, now: float) -> None:
        status, _ = self.status(now)
        if status in ("pending", "running"):
            self.note(now, f"{self.name} stopped on request")
            self.stopped_at = now

    def restart(self, now: float) -> None:
        self.advance(now)
        self._start_attempt(now)
        self._emit(now, "INFO", f"{self.name} restarting (attempt {self.attempt})", "engine")

    def logs_since(self, since_us: int | None, inclusive: bool, limit: int | None) -> list[Line]:
        cap = self.knobs.page_cap
        limit = cap if cap > 0 and (limit is None or limit > cap) else limit
        if since_us is not None:
            since_us -= since_us % RESOLUTION_US[self.knobs.since_resolution]
        if since_us is None:
            start = 0
        elif inclusive:
            start = bisect_left(self.lines, since_us, key=lambda line: line[0])
        else:
            start = bisect_right(self.lines, since_us, key=lambda line: line[0])
        end = len(self.lines) if limit is None else min(len(self.lines), start + limit)
        return self.lines[start:end]


class SimTask:
    def __init__(self, engine_task_id: str, key: str | None, agents: list[SimAgent]) -> None:
        self.id, self.idempotency_key, self.agents = engine_task_id, key, agents

    def status(self, now: float) -> str:
        states = [a.status(now)[0] for a in self.agents]
        if all(s == "pending" for s in states):
            return "pending"
        if any(s in ("pending", "running") for s in states):
            return "running"
        if any(s == "failed" for s in states):
            return "failed"
        return "stopped" if any(s == "stopped" for s in states) else "completed"


class Simulation:
    """Every task and agent the reference Engine knows.

    Run ids are `et-<seed>-<tag>-<n>`: `tag` is drawn from the clock and a random part when the
    Engine starts, so a restarted Engine never hands out the id of a run it has forgotten.
    """

    def __init__(self, knobs: Knobs, clock: Callable[[], float] = time.time) -> None:
        self.knobs, self.clock = knobs, clock
        self.tasks: dict[str, SimTask] = {}
        self.agents: dict[str, SimAgent] = {}
        self.by_key: dict[str, str] = {}
        self.tag = f"{int(clock() * 1000) % 36**8:x}{secrets.token_hex(2)}"

    def submit(
        self, body: dict[str, Any], key: str | None, engine_task_id: str | None = None
    ) -> tuple[str, bool]:
        """Create a run, or return the one already made for `key`; True when created."""
        if key and key in self.by_key:
            return self.by_key[key], False
        n = len(self.tasks) + 1
        engine_task_id = engine_task_id or f"et-{self.knobs.seed}-{self.tag}-{n:06d}"
        now = self.clock()
        agents = [
            SimAgent(f"{engine_task_id}-a{i}", spec.get("ref"), str(spec.get("agent_name") or
                     f"agent{i}"), spec.get("params") or {}, f"{n}:{i}", self.knobs, now)
            for i, spec in enumerate(body["agents"])
        ]  # fmt: skip
        self.tasks[engine_task_id] = SimTask(engine_task_id, key, agents)
        self.agents.update((a.id, a) for a in agents)
        if key:
            self.by_key[key] = engine_task_id
        return engine_task_id, True

    def update(self, engine_task_id: str, changes: list[dict[str, Any]]) -> None:
        """New params for agents of a run (checked by the caller); a line for each live one."""
        now, mine = self.clock(), {a.id: a for a in self.tasks[engine_task_id].agents}
        for change in changes:
            agent = mine[change["engine_agent_id"]]
            agent.params = dict(change["params"])
            if agent.status(now)[0] in ("pending", "running"):
                params = msgspec.json.encode(agent.params).decode()
                agent.note(now, f"{agent.name} params updated: {params}")

    def stop(self, engine_task_id: str) -> str:
        now, task = self.clock(), self.tasks[engine_task_id]
        for agent in task.agents:
            agent.stop(now)
        return task.status(now)

    def restart(self, engine_agent_id: str) -> int:
        agent = self.agents[engine_agent_id]
        agent.restart(self.clock())
        return agent.attempt

    def task_status(self, engine_task_id: str) -> dict[str, Any]:
        task, now = self.tasks[engine_task_id], self.clock()
        agents = []
        for agent in task.agents:
            agent.advance(now)
            status, progress = agent.status(now)
            item: dict[str, Any] = {"engine_agent_id": agent.id, "status": status,
                                    "progress": progress}  # fmt: skip
            if status == "completed":
                item["result"] = agent.result
            elif status == "failed":
                item["error"] = agent.error
            if self.knobs.extras:
                item["ref"], item["attempt"] = agent.ref, agent.attempt
            agents.append(item)
        return {"status": task.status(now), "agents": agents}

    def _answer(self, engine_agent_id: str, since: str | None, limit: int | None) -> list[Line]:
        agent = self.agents[engine_agent_id]
        agent.advance(self.clock())
        since_us = None if since is None else parse_us(since)
        return agent.logs_since(since_us, self.knobs.since_inclusive, limit)

    def logs(
        self, engine_agent_id: str, since: str | None, limit: int | None
    ) -> list[dict[str, Any]]:
        """The lines a logs call answers with, as the Engine means them."""
        return [self.render(line) for line in self._answer(engine_agent_id, since, limit)]

    def logs_body(self, engine_agent_id: str, since: str | None, limit: int | None) -> bytes:
        """The logs answer as sent: a JSON body, broken where a line's flaw says so."""
        lines = self._answer(engine_agent_id, since, limit)
        return b'{"logs":[' + b",".join(self._wire(line) for line in lines) + b"]}"

    def _wire(self, line: Line) -> bytes:
        out = self.render(line)
        flaw = line[7]
        if flaw == "null_timestamp":
            out["timestamp"] = None
        elif flaw == "numeric_level":
            out["level"] = 20
        elif flaw == "text_seq":
            out["seq"] = "seven"
        elif flaw == "invalid_utf8":
            return _wire_json.encode(out).replace(b'"message":"', b'"message":"\xff\xfe', 1)
        return _wire_json.encode(out)

    def render(self, line: Line) -> dict[str, Any]:
        """A line as the Engine means it (a flawed line is marked `flaw` here, for tests)."""
        us, level, message, source, extra, seq, res, flaw = line
        ts = ZERO_TIME if flaw == "zero_time" else format_us(us, res)
        out: dict[str, Any] = {"timestamp": ts, "level": level, "message": message}
        if source is not None:
            out["source"] = source
        if extra is not None:
            out["extra"] = extra
        if self.knobs.extras or self.knobs.seq_restart:
            out["seq"] = seq
        return out

    def render_emitted(self, line: Line) -> dict[str, Any]:
        out = self.render(line)
        if line[7] is not None and line[7] != "zero_time":
            out["flaw"] = line[7]
        return out
