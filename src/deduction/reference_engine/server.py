"""The reference Engine (`deduction engine`): the plan's API 4.1 over aiohttp.web, with fault knobs.

Routes under /engine are the contract (section 4.1, plus an optional agent restart);
/admin lets tests and benchmarks change the knobs and read what the Engine emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from deduction.reference_engine.journal import Journal
from deduction.reference_engine.simulation import RESOLUTION_US, Knobs, SimAgent, Simulation

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_json = msgspec.json.Encoder()
_any = msgspec.json.Decoder()
MAX_SUBMIT_BYTES = 4 * 1024 * 1024


class ReferenceEngine:
    """The Engine's state, counters and fault dice; with a `state_dir`, its runs survive a
    restart (every change is journaled there and replayed at start)."""

    def __init__(self, knobs: Knobs | None = None, state_dir: Path | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.sim = Simulation(self.knobs)
        self.faults = random.Random(f"faults:{self.knobs.seed}")
        self.stats: Counter[str] = Counter()
        self.active = 0  # Engine calls being answered right now
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()  # per engine task: concurrent status calls
        self.journal = Journal(state_dir) if state_dir is not None else None
        self.restored = self._restore() if self.journal is not None else 0

    # -- operations that change runs (journaled) ----------------------------------------------

    def submit(self, body: dict[str, Any], key: str | None) -> tuple[str, bool]:
        with self._frozen_clock() as at:
            engine_task_id, created = self.sim.submit(body, key)
        if created:
            self._record("submit", at, id=engine_task_id, key=key, body=body)
        return engine_task_id, created

    def update(self, engine_task_id: str, changes: list[dict[str, Any]]) -> None:
        with self._frozen_clock() as at:
            self.sim.update(engine_task_id, changes)
        self._record("update", at, id=engine_task_id, changes=changes)

    def stop(self, engine_task_id: str) -> str:
        with self._frozen_clock() as at:
            status = self.sim.stop(engine_task_id)
        self._record("stop", at, id=engine_task_id)
        return status

    def restart(self, engine_agent_id: str) -> int:
        with self._frozen_clock() as at:
            attempt = self.sim.restart(engine_agent_id)
        self._record("restart", at, id=engine_agent_id)
        return attempt

    @contextlib.contextmanager
    def _frozen_clock(self) -> Iterator[float]:
        """One instant for a whole operation, the one journaled: a replay at that instant
        makes exactly the same agents and lines."""
        clock = self.sim.clock
        at = clock()
        self.sim.clock = lambda: at
        try:
            yield at
        finally:
            self.sim.clock = clock

    def set_knobs(self, changes: dict[str, Any]) -> Knobs:
        merged = msgspec.convert({**msgspec.structs.asdict(self.knobs), **changes}, Knobs)
        if merged.ts_resolution not in RESOLUTION_US:
            raise ValueError(f"ts_resolution must be one of {sorted(RESOLUTION_US)}")
        if merged.since_resolution not in RESOLUTION_US:
            raise ValueError(f"since_resolution must be one of {sorted(RESOLUTION_US)}")
        for name in msgspec.structs.asdict(merged):
            setattr(self.knobs, name, getattr(merged, name))  # agents share this object
        self._record("knobs", self.sim.clock(), changes=msgspec.structs.asdict(merged))
        return self.knobs

    def _record(self, op: str, at: float, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.append({"op": op, "at": at, **fields})

    def _restore(self) -> int:
        """Replay the journal at the recorded times; a new journal starts with the knobs."""
        assert self.journal is not None
        records = list(self.journal.records())
        if not records:
            self._record("knobs", self.sim.clock(), changes=msgspec.structs.asdict(self.knobs))
            return 0
        clock, journal = self.sim.clock, self.journal
        self.journal = None  # replaying records nothing
        try:
            for record in records:
                self.sim.clock = _fixed(float(record["at"]))
                self._apply(record)
        finally:
            self.sim.clock, self.journal = clock, journal
        return sum(r["op"] == "submit" for r in records)

    def _apply(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op == "knobs":
            self.set_knobs(record["changes"])
        elif op == "submit":
            self.sim.submit(record["body"], record.get("key"), record["id"])
        elif op == "update":
            self.sim.update(record["id"], record["changes"])
        elif op == "stop":
            self.sim.stop(record["id"])
        elif op == "restart":
            self.sim.restart(record["id"])


def _fixed(at: float) -> Callable[[], float]:
    return lambda: at


def _reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _reply({"message": message}, status)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return _any.decode(raw) if raw else {}
    except msgspec.DecodeError as e:
        raise web.HTTPBadRequest(body=_json.encode({"message": f"invalid JSON: {e}"}),
                                 content_type="application/json") from None  # fmt: skip


def _engine(request: web.Request) -> ReferenceEngine:
    return request.app[ENGINE_KEY]


@web.middleware
async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency, dropped connections and 503s for the /engine routes, as the knobs say."""
    if not request.path.startswith("/engine/"):
        return await handler(request)
    engine = _engine(request)
    k = engine.knobs
    engine.stats["requests"] += 1
    # Concurrent status calls per task, over the whole request: two pollers of one task show up.
    task_id = request.match_info.get("task_id") if request.path.endswith("/status") else None
    engine.active += 1
    if task_id is not None:
        engine.in_flight[task_id] += 1
        engine.max_in_flight[task_id] = max(engine.max_in_flight[task_id],
                                            engine.in_flight[task_id])  # fmt: skip
    try:
        if k.latency > 0:
            await asyncio.sleep(k.latency)
        if k.drop_rate > 0 and engine.faults.random() < k.drop_rate:
            engine.stats["dropped"] += 1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # the handler never answers
        if k.stall_rate > 0 and engine.faults.random() < k.stall_rate:
            engine.stats["stalled"] += 1
            await asyncio.sleep(k.stall_seconds)  # past the client's timeout, usually
        if k.error_rate > 0 and engine.faults.random() < k.error_rate:
            engine.stats["errors"] += 1
            return _error(503, "injected failure")
        return await handler(request)
    finally:
        engine.active -= 1
        if task_id is not None:
            engine.in_flight[task_id] -= 1


async def submit(request: web.Request) -> web.Response:
    engine = _engine(request)
    if (request.content_length or 0) > MAX_SUBMIT_BYTES:
        return _error(413, "submission too large")
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("agents"), list) or not body["agents"]:
        return _error(400, "a submission needs a non-empty list of agents")
    if not all(isinstance(a, dict) for a in body["agents"]) or len(body["agents"]) > 1000:
        return _error(400, "agents must be objects (at most 1000)")
    if engine.knobs.reject_submissions:
        return _error(422, engine.knobs.reject_submissions)
    key = request.headers.get("Idempotency-Key") or body.get("idempotency_key")
    engine.stats["submits"] += 1
    engine_task_id, created = engine.submit(body, str(key) if key else None)
    engine.stats["runs" if created else "replays"] += 1
    return _reply({"engine_task_id": engine_task_id}, 201 if created else 200)


async def task_status(request: web.Request) -> web.Response:
    engine, task_id = _engine(request), request.match_info["task_id"]
    if task_id not in engine.sim.tasks:
        return _error(404, f"unknown task {task_id}")
    engine.stats["status"] += 1
    return _reply(engine.sim.task_status(task_id))


async def agent_logs(request: web.Request) -> web.Response:
    engine, agent_id = _engine(request), request.match_info["agent_id"]
    if agent_id not in engine.sim.agents:
        return _error(404, f"unknown agent {agent_id}")
    since = request.query.get("since")
    try:
        limit = int(request.query["limit"]) if "limit" in request.query else None
        body = engine.sim.logs_body(agent_id, since, limit)
    except ValueError as e:
        return _error(400, f"bad since/limit: {e}")
    engine.stats["logs"] += 1
    return web.Response(body=body, content_type="application/json")


async def update(request: web.Request) -> web.Response:
    engine, task_id = _engine(request), request.match_info["task_id"]
    task = engine.sim.tasks.get(task_id)
    if task is None:
        return _error(404, f"unknown task {task_id}")
    body = await _body(request)
    changes = body.get("agents") if isinstance(body, dict) else None
    if not isinstance(changes, list):
        return _error(400, "an update needs a list of agents")
    now = engine.sim.clock()
    if engine.knobs.reject_updates:
        return _error(422, engine.knobs.reject_updates)
    if task.status(now) not in ("pending", "running"):
        return _error(409, f"task {task_id} has ended")
    mine: dict[Any, SimAgent] = {a.id: a for a in task.agents}  # looked up by untrusted JSON
    for change in changes:
        agent = mine.get(change.get("engine_agent_id")) if isinstance(change, dict) else None
        if agent is None or not isinstance(change.get("params"), dict):
            return _error(400, f"not an agent of task {task_id} with params: {change!r:.200}")
    engine.update(task_id, changes)
    engine.stats["updates"] += 1
    return _reply({"updated": len(changes)})


async def stop(request: web.Request) -> web.Response:
    engine, task_id = _engine(request), request.match_info["task_id"]
    task = engine.sim.tasks.get(task_id)
    if task is None:
        return _error(404, f"unknown task {task_id}")
    status = engine.stop(task_id)
    engine.stats["stops"] += 1
    return _reply({"status": status})


async def restart(request: web.Request) -> web.Response:
    engine, agent_id = _engine(request), request.match_info["agent_id"]
    if not engine.knobs.restart:
        return _error(404, "this Engine cannot restart agents")
    agent = engine.sim.agents.get(agent_id)
    if agent is None:
        return _error(404, f"unknown agent {agent_id}")
    now = engine.sim.clock()
    if agent.status(now)[0] != "failed":
        return _error(409, f"agent {agent_id} has not failed")
    attempt = engine.restart(agent_id)
    engine.stats["restarts"] += 1
    return _reply({"engine_agent_id": agent_id, "attempt": attempt})


async def load(request: web.Request) -> web.Response:
    """Not part of 4.1: the CPU and memory use the knobs set (404 with `load` off)."""
    engine = _engine(request)
    engine.stats["load"] += 1
    k = engine.knobs
    if not k.load:
        return _error(404, "no load figures on this Engine")
    return _reply({"cpu_percent": k.cpu_percent, "memory_percent": k.memory_percent})


# -- admin -----------------------------------------------------------------------------------


async def get_knobs(request: web.Request) -> web.Response:
    return _reply(_engine(request).knobs)


async def set_knobs(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        knobs = _engine(request).set_knobs(body if isinstance(body, dict) else {})
    except (msgspec.ValidationError, ValueError) as e:
        return _error(400, str(e))
    return _reply(knobs)


async def get_stats(request: web.Request) -> web.Response:
    """Counters; `lines` is every log line emitted so far (agents advanced to now) and
    `active_agents` how many agents are still pending or running."""
    engine = _engine(request)
    most = max(engine.max_in_flight.values(), default=0)
    now, lines, active = engine.sim.clock(), 0, 0
    for agent in engine.sim.agents.values():
        agent.advance(now)
        lines += len(agent.lines)
        active += agent.status(now)[0] in ("pending", "running")
    return _reply({**engine.stats, "tasks": len(engine.sim.tasks), "max_concurrent_status": most,
                   "lines": lines, "active_agents": active})  # fmt: skip


async def emitted(request: web.Request) -> web.Response:
    """Every line each agent of a task emitted so far (no faults, no `since`); a line sent
    broken carries `flaw` (how it was broken)."""
    engine, task_id = _engine(request), request.match_info["task_id"]
    task = engine.sim.tasks.get(task_id)
    if task is None:
        return _error(404, f"unknown task {task_id}")
    now = engine.sim.clock()
    agents = []
    for agent in task.agents:
        agent.advance(now)
        agents.append({"engine_agent_id": agent.id, "ref": agent.ref, "attempt": agent.attempt,
                       "status": agent.status(now)[0], "params": agent.params,
                       "lines": [engine.sim.render_emitted(line) for line in agent.lines]})  # fmt: skip
    return _reply({"engine_task_id": task_id, "agents": agents,
                   "max_concurrent_status": engine.max_in_flight[task_id]})  # fmt: skip


ENGINE_KEY = web.AppKey("engine", ReferenceEngine)


def make_app(engine: ReferenceEngine) -> web.Application:
    app = web.Application(middlewares=[faults], client_max_size=MAX_SUBMIT_BYTES)
    app[ENGINE_KEY] = engine
    app.router.add_post("/engine/task/submit", submit)
    app.router.add_get("/engine/task/{task_id}/status", task_status)
    app.router.add_get("/engine/agent/{agent_id}/logs", agent_logs)
    app.router.add_put("/engine/task/{task_id}/update", update)
    app.router.add_post("/engine/task/{task_id}/stop", stop)
    app.router.add_post("/engine/agent/{agent_id}/restart", restart)
    app.router.add_get("/engine/load", load)
    app.router.add_get("/admin/knobs", get_knobs)
    app.router.add_put("/admin/knobs", set_knobs)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_get("/admin/tasks/{task_id}", emitted)
    return app


@contextlib.asynccontextmanager
async def serve_reference_engine(
    engine: ReferenceEngine, host: str = "127.0.0.1", port: int = 8080
) -> AsyncIterator[web.AppRunner]:
    """Serve `engine` until the block exits."""
    runner = web.AppRunner(make_app(engine), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    try:
        yield runner
    finally:
        await runner.cleanup()
        if engine.journal is not None:
            engine.journal.close()


async def run_reference_engine(
    knobs: Knobs, host: str, port: int, state_dir: Path | None = None
) -> None:
    """`deduction engine`: serve until cancelled."""
    async with serve_reference_engine(ReferenceEngine(knobs, state_dir), host, port):
        await asyncio.Event().wait()
