"""What a process's adapters are handed: the application, its two thread pools and
read-your-writes, each wait with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from deduction.application.ports import Dispatcher, Engine, NoDispatcher, ReadModels
from deduction.application.service import DeductionApp, Receipt
from deduction.config import Settings

log = structlog.get_logger(__name__)
POLL_DELAY_WARNING = 1.0  # seconds a poll call may wait for a thread before we say so
POLL_QUEUE_TIMEOUT = 30.0  # a poll call not started by then is shed; the next sweep retries


class ReadModelLagError(Exception):
    """The command was saved, but the read tables did not include it in time (503)."""


class ServiceBusyError(Exception):
    """A call did not get a thread, or did not finish, within its deadline (503)."""


class _Expired(Exception):
    pass


@dataclass
class PollLoad:
    """How long poll calls wait for a thread: the overload signal shown in logs and /ready."""

    backlog: int = 0  # poll calls submitted and not finished
    last_wait: float = 0.0
    delayed_since: float | None = None
    shed: int = 0
    _last_log: float = 0.0

    def started(self, waited: float) -> None:
        self.last_wait = waited
        now = time.monotonic()
        if waited < POLL_DELAY_WARNING:
            self.delayed_since = None
            return
        self.delayed_since = self.delayed_since or now
        if now - self._last_log > 10:
            self._last_log = now
            log.warning("worker.polls_delayed", waited=round(waited, 3), backlog=self.backlog,
                        note="commands have their own pool and are not delayed")  # fmt: skip

    def report(self) -> dict[str, Any]:
        delayed = self.delayed_since is not None
        return {"backlog": self.backlog, "last_wait_s": round(self.last_wait, 3),
                "delayed": delayed, "shed": self.shed}  # fmt: skip


@dataclass
class Services:
    settings: Settings
    database_url: str
    app: DeductionApp
    runner: ReadModels
    pool: AsyncConnectionPool
    executor: ThreadPoolExecutor
    poll_executor: ThreadPoolExecutor | None = None
    dispatcher: Dispatcher = field(default_factory=NoDispatcher)
    poll_load: PollLoad = field(default_factory=PollLoad)
    engine: Engine | None = None  # this process's Engine client, when it runs the jobs
    # Told of every command: its name, the error it raised (None: done) and its seconds.
    on_command: Callable[[str, BaseException | None, float], None] | None = None

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous application call in the command pool, within the command deadline."""
        deadline = time.monotonic() + self.settings.read_your_writes_timeout
        return await self._run_by(self.executor, deadline, fn, *args)

    async def run_poll(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a worker call in the poll pool (never the command pool). Under overload it
        waits; past POLL_QUEUE_TIMEOUT without a thread it is shed (ServiceBusyError)."""
        executor = self.poll_executor or self.executor
        self.poll_load.backlog += 1
        try:
            return await self._run_by(executor, time.monotonic() + POLL_QUEUE_TIMEOUT, fn, *args,
                                      finish=None, on_start=self.poll_load.started)  # fmt: skip
        except ServiceBusyError:
            self.poll_load.shed += 1
            log.warning("worker.poll_shed", call=getattr(fn, "__name__", "?"),
                        backlog=self.poll_load.backlog)  # fmt: skip
            raise
        finally:
            self.poll_load.backlog -= 1

    async def _run_by(self, executor: ThreadPoolExecutor, deadline: float,
                      fn: Callable[..., Any], *args: Any, finish: float | None = 0.0,
                      on_start: Callable[[float], None] | None = None) -> Any:  # fmt: skip
        """`fn` in `executor` if a thread takes it before `deadline`; with `finish` set, the
        answer is also awaited only until `deadline + finish`."""
        loop, submitted = asyncio.get_running_loop(), time.monotonic()

        def call() -> Any:
            started = time.monotonic()
            if on_start is not None:
                loop.call_soon_threadsafe(on_start, started - submitted)
            if started > deadline:
                raise _Expired
            return fn(*args)

        future = loop.run_in_executor(executor, call)
        try:
            if finish is None:
                return await future
            return await asyncio.wait_for(future, max(0.0, deadline + finish - time.monotonic()))
        except _Expired:
            raise ServiceBusyError("the service is overloaded: the call waited for a thread"
                                   " past its deadline and was not run; retry") from None  # fmt: skip
        except TimeoutError:
            raise ServiceBusyError("the call did not finish in time; it may still complete"
                                   " (a retried create may then answer 409)") from None  # fmt: skip

    async def command(self, fn: Callable[..., Receipt], *args: Any) -> Receipt:
        """Run a command, then wait until the read tables include its events; all of it within
        READ_YOUR_WRITES_TIMEOUT."""
        started = time.monotonic()
        if self.on_command is None:
            return await self._command(started, fn, *args)
        try:
            receipt = await self._command(started, fn, *args)
        except Exception as e:
            self.on_command(fn.__name__, e, time.monotonic() - started)
            raise
        self.on_command(fn.__name__, None, time.monotonic() - started)
        return receipt

    async def _command(self, started: float, fn: Callable[..., Receipt], *args: Any) -> Receipt:
        receipt: Receipt = await self.run_sync(fn, *args)
        self.runner.kick(receipt.topics)
        left = self.settings.read_your_writes_timeout - (time.monotonic() - started)
        # Only the read models that take the command's events: a create never waits behind
        # the log table's backlog under ingestion load.
        if not await self.runner.wait_for(receipt.position, max(0.0, left), receipt.topics):
            raise ReadModelLagError(
                f"saved, but the read tables did not reach position {receipt.position}"
                f" within {self.settings.read_your_writes_timeout}s"
            )
        return receipt

    def stuck_save_age(self) -> float:
        """Seconds the oldest save under way has run (the event store recorder times them)."""
        age = getattr(self.app.recorder, "oldest_save_age", None)
        return float(age()) if callable(age) else 0.0
