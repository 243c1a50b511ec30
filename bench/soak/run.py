"""The fault soak: the API, two `deduction worker` processes and the reference Engine (with
500s, stalls and capped log pages) on a PostgreSQL and a Redis of its own, under a steady mix
of HTTP commands and reads, while workers, the API, PostgreSQL, Redis and the Engine are
killed or restarted at random moments. Afterwards it waits for quiescence and checks the
stored record against the Engine's own: see README "Reliability".

SOAK_MINUTES (default 10) sets the length; fault counts scale with it (the default run
injects 55 worker kills, 11 API kills, 11 PostgreSQL restarts, 11 Redis restarts and 6
Engine restarts). SOAK_SEED fixes the random choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import psycopg

from bench.common import RESULTS, machine, versions
from bench.soak.processes import Supervised, Supervisor
from bench.soak.servers import OwnPostgres, OwnRedis, free_port
from deduction.adapters.postgres import create_database, with_database
from deduction.domain.ids import to_uuid

# Faults per minute of soak: the default 10 minutes give 55, 11, 11, 11 and 6.
FAULT_RATES = {"worker": 5.5, "api": 1.1, "postgres": 1.1, "redis": 1.1, "engine": 0.6}
API = "/api/v1/deduction"
ENGINE_ARGS = ["--seed", "11", "--duration", "15:40", "--log-rate", "3", "--fail-rate", "0.1",
               "--error-rate", "0.03", "--stall-rate", "0.01", "--stall-seconds", "4",
               "--page-cap", "40", "--collide-rate", "0.2"]  # fmt: skip
RECOVERY_TIMEOUT = 120.0
QUIESCENCE_TIMEOUT = 300.0


INITIAL_ROUND = 0  # every agent's `round` param when its task is created


@dataclass
class Record:
    """What the clients saw: every status, every 500, every acknowledged command."""

    statuses: Counter[str] = field(default_factory=Counter)
    errors_500: list[dict[str, Any]] = field(default_factory=list)
    created: dict[int, str] = field(default_factory=dict)  # task id -> name
    # acknowledged updates per task: the execution and the `round` each one set
    updates: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    stops: set[int] = field(default_factory=set)
    refused: int = 0  # the API was down: connection refused or reset
    requests: int = 0


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, record: Record) -> None:
        self.session, self.base, self.record = session, base, record

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        self.record.requests += 1
        try:
            async with self.session.request(
                method, self.base + path, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as r:  # fmt: skip
                text = await r.text()
                self.record.statuses[str(r.status)] += 1
                if r.status >= 500 and r.status != 503:
                    self.record.errors_500.append(
                        {"at": time.time(), "method": method, "path": path, "status": r.status,
                         "body": text[:500]})  # fmt: skip
                try:
                    return r.status, json.loads(text) if text else None
                except ValueError:
                    return r.status, None
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.record.refused += 1
            self.record.statuses["no answer"] += 1
            return 0, None


def _body(n: int, rng: random.Random) -> dict[str, Any]:
    agents = [{"agent_meta_id": 10001, "side": "red", "params": {"round": INITIAL_ROUND}},
              {"agent_meta_id": 10002, "side": "blue", "params": {"round": INITIAL_ROUND}}]  # fmt: skip
    return {"name": f"soak-{n:05d}", "description": "soak", "scheme_id": 1234567890,
            "env_instance_id": 9876543210, "agent_configs": agents[: rng.choice((1, 2, 2))]}  # fmt: skip


async def creator(client: Client, rng: random.Random, every: float, until: float) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        body, key = _body(n, rng), uuid4().hex
        for _ in range(40):  # a client retries with the same key until it gets an answer
            status, answer = await client.call("POST", f"{API}/task/create", body,
                                               {"Idempotency-Key": key})  # fmt: skip
            if status == 200:
                client.record.created[int(answer["data"]["task_id"])] = body["name"]
                break
            if status not in (0, 503):
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(rng.uniform(0.5, 1.5) * every)


async def actor(client: Client, rng: random.Random, every: float, until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.5, 1.5) * every)
        if not client.record.created:
            continue
        task_id = rng.choice(list(client.record.created))
        roll = rng.random()
        if roll < 0.1:
            await client.call("GET", f"{API}/task/list?page=1&size=20")
        elif roll < 0.35:
            await client.call("GET", f"{API}/task/{task_id}/logs?limit=100")
        elif roll < 0.45:
            status, _ = await client.call("POST", f"{API}/task/{task_id}/stop")
            if status == 200:
                client.record.stops.add(task_id)
        elif roll < 0.65:
            status, detail = await client.call("GET", f"{API}/task/{task_id}")
            if status == 200 and detail["data"]["status"] in ("pending", "running"):
                ex = detail["data"]["agent_executions"][0]["id"]
                value = rng.randrange(1000)
                change = {"agent_configs": [{"agent_execution_id": ex,
                                             "params": {"round": value}}]}  # fmt: skip
                status, _ = await client.call("PUT", f"{API}/task/{task_id}/update", change)
                if status == 200:
                    client.record.updates.setdefault(task_id, []).append((ex, value))
        else:
            await client.call("GET", f"{API}/task/{task_id}")


class Soak:
    def __init__(self, minutes: float, seed: int) -> None:
        self.minutes, self.rng = minutes, random.Random(seed)
        self.dir = Path(tempfile.mkdtemp(prefix="deduction-soak-"))
        self.pg = OwnPostgres(self.dir / "postgres")
        self.redis = OwnRedis(self.dir / "redis")
        self.api_port, self.engine_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.engine_url = f"http://127.0.0.1:{self.engine_port}"
        self.record = Record()
        self.recovery: dict[str, list[float]] = {k: [] for k in FAULT_RATES}
        self.unrecovered: list[dict[str, Any]] = []
        self.db_url = ""

    # -- the deployment ------------------------------------------------------------------------

    def start(self) -> None:
        self.pg.start()
        self.redis.start()
        create_database(self.pg.url, "deduction")
        self.db_url = with_database(self.pg.url, "deduction")
        env = {k: v for k, v in os.environ.items() if k not in ("CI",)}
        env.update(DATABASE_URL=self.db_url, REDIS_URL=self.redis.url, WORKER_QUEUE="soak",
                   ENGINE_URL=self.engine_url, API_HOST="127.0.0.1", API_PORT=str(self.api_port),
                   ENGINE_TIMEOUT="3", TASK_POLL_INTERVAL="2", LOG_LEVEL="INFO")  # fmt: skip
        self.env = env
        logs = self.dir / "logs"
        logs.mkdir()
        self.engine = Supervised("engine", ["engine", "--port", str(self.engine_port),
                                 "--state-dir", str(self.dir / "engine"), *ENGINE_ARGS], env, logs)  # fmt: skip
        self.api = Supervised("api", ["serve"], env, logs, ready_mark="api.started")
        self.workers = [Supervised(f"worker{i}", ["worker"], env, logs, "worker.started")
                        for i in range(2)]  # fmt: skip
        import subprocess

        from bench.soak.processes import BIN

        subprocess.run([str(BIN), "db", "load-catalog"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        for proc in (self.engine, self.api, *self.workers):
            proc.start()
        self.supervisor = Supervisor([self.engine, self.api, *self.workers])
        self.supervisor.start()

    def stop(self, keep: bool) -> None:
        with contextlib.suppress(Exception):
            self.supervisor.stop()
        for proc in (self.api, *self.workers, self.engine):
            with contextlib.suppress(Exception):
                proc.terminate()
        with contextlib.suppress(Exception):
            self.redis.stop()
        with contextlib.suppress(Exception):
            self.pg.stop(remove=not keep)
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- probes --------------------------------------------------------------------------------

    async def _engine_polls(self, session: aiohttp.ClientSession) -> int | None:
        try:
            async with session.get(f"{self.engine_url}/admin/stats",
                                   timeout=aiohttp.ClientTimeout(total=3)) as r:  # fmt: skip
                return int((await r.json())["status"]) if r.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError, KeyError, ValueError):
            return None

    async def _api_serves(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.base}{API}/task/list?size=1",
                                   timeout=aiohttp.ClientTimeout(total=3)) as r:  # fmt: skip
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _open_tasks(self, session: aiohttp.ClientSession) -> bool:
        """Whether any task is pending or running (if none, no polls are due)."""
        for status in ("running", "pending"):
            try:
                async with session.get(f"{self.base}{API}/task/list?size=1&status={status}",
                                       timeout=aiohttp.ClientTimeout(total=3)) as r:  # fmt: skip
                    if r.status != 200 or (await r.json())["data"]["total"]:
                        return True
            except (TimeoutError, aiohttp.ClientError, OSError):
                return True
        return False

    async def recovered(self, session: aiohttp.ClientSession, kind: str, started: float,
                        marks: tuple[Supervised, int] | None = None) -> None:  # fmt: skip
        """Back when the API serves a task list, a replaced process has started, and the
        Engine sees status polls again (work is flowing)."""
        deadline = started + RECOVERY_TIMEOUT
        baseline: int | None = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if marks is not None and marks[0].marks() <= marks[1]:
                continue
            if not await self._api_serves(session):
                continue
            polls = await self._engine_polls(session)
            if polls is None:
                continue
            if baseline is None:
                baseline = polls
                continue
            if polls > baseline or not await self._open_tasks(session):
                self.recovery[kind].append(time.monotonic() - started)
                return
        self.unrecovered.append({"kind": kind, "at": time.time()})

    # -- faults --------------------------------------------------------------------------------

    async def inject(
        self, session: aiohttp.ClientSession, kind: str, victim: Supervised
    ) -> asyncio.Task[None]:
        """Inject one fault; measuring the recovery goes on in the background."""
        started = time.monotonic()
        marks = None
        if kind == "worker":
            marks = (victim, victim.marks())
            await asyncio.to_thread(victim.kill)
        elif kind == "api":
            marks = (self.api, self.api.marks())
            await asyncio.to_thread(self.api.kill)
        elif kind == "postgres":
            await asyncio.to_thread(self.pg.restart)
        elif kind == "redis":
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(self.rng.uniform(2, 5))
            await asyncio.to_thread(self.redis.start)
        elif kind == "engine":
            await asyncio.to_thread(self.engine.kill, True)
            await asyncio.sleep(self.rng.uniform(1, 3))
            await asyncio.to_thread(self.engine.start)
        return asyncio.create_task(self.recovered(session, kind, started, marks))

    async def faults(self, session: aiohttp.ClientSession, duration: float) -> Counter[str]:
        """The planned faults at random moments, evenly spread; a fault may come while the
        system still recovers from the previous one (of another kind), as in production."""
        plan = [k for k, rate in FAULT_RATES.items() for _ in range(round(rate * self.minutes))]
        self.rng.shuffle(plan)
        injected: Counter[str] = Counter()
        pending: dict[str, asyncio.Task[None]] = {}
        measuring: list[asyncio.Task[None]] = []
        begin = time.monotonic()
        gap = duration / (len(plan) + 1)
        for i, kind in enumerate(plan):
            due = begin + (i + 1) * gap + self.rng.uniform(-0.3, 0.3) * gap
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            # A process or server is faulted again only once it recovered from the last time.
            targets = self.workers if kind == "worker" else [self.api]
            keys = [f"{kind}:{t.name}" for t in targets]
            free = [k for k in keys if k not in pending or pending[k].done()]
            if not free:
                await asyncio.wait([pending[k] for k in keys], return_when="FIRST_COMPLETED")
                free = [k for k in keys if pending[k].done()]
            key = self.rng.choice(free)
            task = await self.inject(session, kind, targets[keys.index(key)])
            pending[key] = task
            measuring.append(task)
            injected[kind] += 1
            print(f"  {time.monotonic() - begin:6.0f}s  {kind}", flush=True)
        await asyncio.gather(*measuring)
        return injected

    # -- the run -------------------------------------------------------------------------------

    async def drive(self) -> dict[str, Any]:
        duration = self.minutes * 60
        async with aiohttp.ClientSession() as session:
            while not await self._api_serves(session):
                await asyncio.sleep(0.2)
            client = Client(session, self.base, self.record)
            until = time.monotonic() + duration
            load = [asyncio.create_task(creator(client, random.Random(self.rng.random()), 2.0,
                                                until))]  # fmt: skip
            load += [asyncio.create_task(actor(client, random.Random(self.rng.random()), 0.4,
                                               until)) for _ in range(3)]  # fmt: skip
            injected = await self.faults(session, duration * 0.95)
            await asyncio.gather(*load)
            quiet_s = await self.quiescence(client)
        return {"injected": dict(injected), "quiescence_s": quiet_s}

    async def quiescence(self, client: Client) -> float | None:
        """Every task terminal and its logs drained: the read tables stop changing."""
        started = time.monotonic()
        last, stable_since = None, time.monotonic()
        while time.monotonic() - started < QUIESCENCE_TIMEOUT:
            await asyncio.sleep(2)
            try:
                async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
                    cur = await conn.execute(
                        "SELECT count(*) FILTER (WHERE status IN ('pending','running')),"
                        " (SELECT count(*) FROM agent_execution_log) FROM deduction_task"
                    )
                    row = await cur.fetchone()
            except psycopg.Error:
                continue
            assert row is not None
            if row != last:
                last, stable_since = row, time.monotonic()
            elif row[0] == 0 and time.monotonic() - stable_since >= 3 * 2 + 4:
                return time.monotonic() - started
        return None

    # -- the checks ----------------------------------------------------------------------------

    async def check(self) -> dict[str, Any]:
        for proc in (self.api, *self.workers):
            await asyncio.to_thread(proc.terminate)
        result: dict[str, Any] = {}
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT id, status, engine_task_id FROM deduction_task")
            tasks = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
            open_ = [t for t, (s, _) in tasks.items() if s in ("pending", "running")]
            result["tasks"] = len(tasks)
            result["statuses"] = dict(Counter(s for s, _ in tasks.values()))
            result["not_terminal"] = open_
            result["acknowledged_missing"] = await self._acknowledged(conn, tasks)
            result["engine_runs"] = self._runs(tasks)
            result["logs"] = await self._logs(conn, tasks)
            result["rebuild"] = await self._rebuild(conn)
        return result

    async def _acknowledged(self, conn: psycopg.AsyncConnection[Any],
                            tasks: dict[int, Any]) -> list[str]:  # fmt: skip
        missing = []
        for task_id in self.record.created:
            cur = await conn.execute(
                "SELECT topic, state FROM deduction_events WHERE originator_id = %s",
                [to_uuid(task_id)])  # fmt: skip
            events = [(t.rsplit(".", 1)[-1], bytes(state)) for t, state in await cur.fetchall()]
            topics = Counter(topic for topic, _ in events)
            if task_id not in tasks or not topics["Created"]:
                missing.append(f"create {task_id}")
                continue
            # Each acknowledged update's value is one an UpdateRequested event sent, or the
            # value the execution already had (an update that changes nothing saves nothing).
            sent = {(c["execution_id"], c["params"].get("round"))
                    for topic, state in events if topic == "UpdateRequested"
                    for c in json.loads(state)["changes"]}  # fmt: skip
            for ex, value in self.record.updates.get(task_id, []):
                if (ex, value) not in sent and value != INITIAL_ROUND:
                    missing.append(f"update {task_id}: round {value} of execution {ex}")
            if task_id in self.record.stops and not topics["StopRequested"]:
                missing.append(f"stop {task_id}")
        return missing

    def _runs(self, tasks: dict[int, Any]) -> dict[str, Any]:
        """Engine runs per task from the Engine's own journal (submits are keyed by task id)."""
        runs: Counter[str] = Counter()
        by_key: dict[str, str] = {}
        journal = self.dir / "engine" / "runs.jsonl"
        for raw in journal.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if record.get("op") == "submit":
                    runs[str(record.get("key"))] += 1
                    by_key[str(record.get("key"))] = record["id"]
        twice = {k: n for k, n in runs.items() if n > 1}
        never = [t for t, (s, e) in tasks.items() if e and str(t) not in runs]
        unknown = [k for k in runs if not k.isdigit() or int(k) not in tasks]
        mismatched = [t for t, (_, e) in tasks.items() if e and by_key.get(str(t)) not in (None, e)]
        return {"runs": sum(runs.values()), "tasks_with_run": len(runs), "more_than_one": twice,
                "recorded_but_not_in_engine": never, "runs_of_no_task": unknown,
                "engine_id_mismatch": mismatched}  # fmt: skip

    async def _logs(self, conn: psycopg.AsyncConnection[Any],
                    tasks: dict[int, Any]) -> dict[str, Any]:  # fmt: skip
        from tests.support.logs import engine_multiset, stored_multiset

        compared = lost = duplicated = extra = agents = 0
        bad: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            for task_id, (_, engine_task_id) in tasks.items():
                if not engine_task_id:
                    continue
                async with session.get(f"{self.engine_url}/admin/tasks/{engine_task_id}") as r:
                    emitted = await r.json()
                cur = await conn.execute(
                    "SELECT engine_agent_id, id FROM agent_execution WHERE deduction_task_id = %s",
                    [task_id])  # fmt: skip
                executions = dict(await cur.fetchall())
                for agent in emitted["agents"]:
                    agents += 1
                    want = engine_multiset(agent["lines"])
                    execution = executions.get(agent["engine_agent_id"])
                    have = await stored_multiset(conn, execution) if execution else Counter()
                    compared += sum(want.values())
                    missing, surplus = want - have, have - want
                    dup = sum(n for k, n in surplus.items() if k in want)
                    lost += sum(missing.values())
                    duplicated += dup
                    extra += sum(surplus.values()) - dup
                    if missing or surplus:
                        bad.append({"task": task_id, "engine_agent_id": agent["engine_agent_id"],
                                    "engine_lines": sum(want.values()),
                                    "stored_lines": sum(have.values()),
                                    "lost": sum(missing.values()),
                                    "surplus": sum(surplus.values())})  # fmt: skip
        return {"agents": agents, "lines_compared": compared, "lost": lost,
                "duplicated": duplicated, "unknown": extra, "agents_differing": bad[:50]}  # fmt: skip

    async def _rebuild(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        from deduction.projections.runner import all_projections

        async def snapshot() -> dict[str, Counter[str]]:
            out = {}
            for p in all_projections():
                for table in p.tables:
                    cur = await conn.execute(f"SELECT * FROM {table}")
                    out[table] = Counter(repr(r) for r in await cur.fetchall())
            return out

        before = await snapshot()
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("deduction")), "projections", "rebuild",
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        out, _ = await proc.communicate()
        after = await snapshot()
        differ = {t: {"rows_before": sum(before[t].values()), "rows_after": sum(after[t].values()),
                      "only_before": sum((before[t] - after[t]).values()),
                      "only_after": sum((after[t] - before[t]).values())}
                  for t in before if before[t] != after.get(t)}  # fmt: skip
        return {"exit": proc.returncode, "tables": len(before),
                "rows": sum(sum(c.values()) for c in before.values()), "differing": differ,
                "output": out.decode(errors="replace")[-300:]}  # fmt: skip


def _verdict(summary: dict[str, Any]) -> list[str]:
    c, failures = summary["checks"], []
    if c["not_terminal"]:
        failures.append(f"{len(c['not_terminal'])} tasks not terminal")
    if c["acknowledged_missing"]:
        failures.append(f"{len(c['acknowledged_missing'])} acknowledged commands missing")
    runs = c["engine_runs"]
    for key in ("more_than_one", "recorded_but_not_in_engine", "runs_of_no_task",
                "engine_id_mismatch"):  # fmt: skip
        if runs[key]:
            failures.append(f"engine runs: {key} {runs[key]}")
    logs = c["logs"]
    if logs["lost"] or logs["duplicated"] or logs["unknown"]:
        failures.append(f"log lines: {logs['lost']} lost, {logs['duplicated']} duplicated,"
                        f" {logs['unknown']} unknown")  # fmt: skip
    if c["rebuild"]["differing"] or c["rebuild"]["exit"] != 0:
        failures.append(f"read tables differ from a rebuild: {sorted(c['rebuild']['differing'])}")
    if summary["http"]["500"]:
        failures.append(f"{summary['http']['500']} HTTP 5xx answers other than 503")
    if summary["unrecovered"]:
        failures.append(f"{len(summary['unrecovered'])} faults not recovered from")
    if summary["quiescence_s"] is None:
        failures.append("no quiescence")
    if summary["processes"]["worker_exits"]:
        failures.append(f"workers exited on their own: {summary['processes']['worker_exits']}")
    return failures


def table(summary: dict[str, Any]) -> str:
    rows = ["| fault | injected | recovery median (s) | recovery max (s) |", "|---|---:|---:|---:|"]
    for kind, times in summary["recovery"].items():
        med = f"{statistics.median(times):.1f}" if times else "–"
        top = f"{max(times):.1f}" if times else "–"
        rows.append(f"| {kind} | {summary['injected'].get(kind, 0)} | {med} | {top} |")
    c, h = summary["checks"], summary["http"]
    rows += [
        "",
        "| measure | value |", "|---|---:|",
        f"| minutes under load | {summary['minutes']} |",
        (f"| HTTP requests / answered / no answer (API down) | {h['requests']} / "
         f"{h['requests'] - h['no_answer']} / {h['no_answer']} |"),
        f"| 503 answers | {h['503']} |",
        f"| HTTP 500 answers | {h['500']} |",
        (f"| commands acknowledged (create / update / stop) | {h['acknowledged']['create']} / "
         f"{h['acknowledged']['update']} / {h['acknowledged']['stop']} |"),
        f"| acknowledged commands missing | {len(c['acknowledged_missing'])} |",
        f"| tasks / not terminal | {c['tasks']} / {len(c['not_terminal'])} |",
        (f"| Engine runs / tasks with more than one | {c['engine_runs']['runs']} / "
         f"{len(c['engine_runs']['more_than_one'])} |"),
        (f"| log lines compared / lost / duplicated | {c['logs']['lines_compared']} / "
         f"{c['logs']['lost']} / {c['logs']['duplicated']} |"),
        (f"| read-table rows / differing from a rebuild | {c['rebuild']['rows']} / "
         f"{len(c['rebuild']['differing'])} tables |"),
        f"| quiescence after the load (s) | {summary['quiescence_s']} |",
    ]  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    seed = int(os.environ.get("SOAK_SEED", "1"))
    soak = Soak(minutes, seed)
    print(f"soak: {minutes} min, seed {seed}, in {soak.dir}", flush=True)
    failed = True
    try:
        soak.start()
        started = time.time()
        driven = asyncio.run(soak.drive())
        checks = asyncio.run(soak.check())
        r = soak.record
        summary = {
            "minutes": minutes, "seed": seed, "started": started, **driven,
            "recovery": {k: [round(x, 2) for x in v] for k, v in soak.recovery.items()},
            "recovery_summary": {k: {"median": round(statistics.median(v), 2),
                                     "max": round(max(v), 2)} if v else None
                                 for k, v in soak.recovery.items()},
            "unrecovered": soak.unrecovered,
            "http": {"requests": r.requests, "no_answer": r.refused,
                     "503": r.statuses.get("503", 0),
                     "500": len(r.errors_500), "statuses": dict(r.statuses),
                     "errors_500": r.errors_500[:20],
                     "acknowledged": {"create": len(r.created), "update": sum(map(len, r.updates.values())),
                                      "stop": len(r.stops)}},
            "processes": {"worker_exits": [c for w in soak.workers for c in w.exits],
                          "api_exits": soak.api.exits, "engine_exits": soak.engine.exits,
                          "worker_kills": sum(w.killed for w in soak.workers),
                          "api_kills": soak.api.killed},
            "checks": checks, "machine": machine(), "versions": versions(),
        }  # fmt: skip
        summary["failures"] = _verdict(summary)
        failed = bool(summary["failures"])
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "soak.json").write_text(json.dumps(summary, indent=2, default=str))
        print(table(summary))
        print("\nFAILED: " + "; ".join(summary["failures"]) if failed else "\nsoak passed")
    finally:
        soak.stop(keep=failed)
        if failed:
            print(f"logs kept in {soak.dir}, the database in {soak.pg.workdir}")
    return 1 if failed else 0
