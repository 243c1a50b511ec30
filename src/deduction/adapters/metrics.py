"""The Prometheus series of a process (README, "Metrics"): defined here, observed where things
happen, exposed by the API's /metrics and by a worker's METRICS_PORT.

Labels are bounded sets (route templates, operation names, outcomes), never ids. Observing is
a dict lookup and a histogram observe: label children are resolved once and kept.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from deduction.application.ports import (
    EngineProtocolError,
    EngineRejectedError,
    EngineRunNotFoundError,
)
from deduction.application.service import CommandError
from deduction.application.services import ReadModelLagError, ServiceBusyError
from deduction.domain.errors import DomainError

CONTENT_TYPE = CONTENT_TYPE_LATEST
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UNMATCHED = "(unmatched)"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TYPED = re.compile(r"\{(\w+):\w+\}")


disable_created_metrics()  # no `_created` series beside each counter and histogram


class Metrics:
    """Every series of the service, in a registry of its own (one per process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http = Histogram("deduction_http_request_duration_seconds",
                              "HTTP requests by route template and status, and their latency",
                              ("method", "route", "status"), buckets=FAST, registry=r)  # fmt: skip
        self.commands = Histogram("deduction_command_duration_seconds",
                                  "Commands by name and outcome, with their latency",
                                  ("command", "outcome"), buckets=FAST, registry=r)  # fmt: skip
        self.engine_calls = Histogram("deduction_engine_call_duration_seconds",
                                      "Engine calls by operation and outcome, with their latency",
                                      ("operation", "outcome"), buckets=FAST, registry=r)  # fmt: skip
        self.circuit_open = Gauge("deduction_engine_circuit_open",
                                  "1 while the Engine client's circuit breaker refuses calls",
                                  registry=r)  # fmt: skip
        self.poll_cycle = Histogram("deduction_poll_cycle_duration_seconds",
                                    "One sweep: re-deriving and queueing every pending job",
                                    buckets=SLOW, registry=r)  # fmt: skip
        self.poll_lag = Gauge("deduction_poll_lag_seconds",
                              "How much later than TASK_POLL_INTERVAL the last sweep started",
                              registry=r)  # fmt: skip
        self.jobs = Histogram("deduction_worker_job_duration_seconds",
                              "Worker jobs by name and outcome, with their duration",
                              ("job", "outcome"), buckets=SLOW, registry=r)  # fmt: skip
        self.log_lines = Counter("deduction_log_lines_ingested",
                                 "Engine log lines saved by polls", registry=r)  # fmt: skip
        self.log_gaps = Counter("deduction_log_gaps_recorded",
                                "Gaps recorded in agents' logs (lines no read could give)",
                                registry=r)  # fmt: skip
        self.projection_lag = Gauge("deduction_projection_lag_events",
                                    "Events stored and not yet applied, per projection",
                                    ("projection",), registry=r)  # fmt: skip
        self.queue_length = Gauge("deduction_queue_length",
                                  "Tasks waiting for admission to the Engine", registry=r)  # fmt: skip
        self.queue_oldest = Gauge("deduction_queue_oldest_wait_seconds",
                                  "How long the oldest queued task has waited", registry=r)  # fmt: skip
        self.engine_load = Gauge("deduction_engine_load_percent",
                                 "The Engine's last recorded load figures",
                                 ("resource",), registry=r)  # fmt: skip
        self._http: dict[tuple[str, str, int], Any] = {}
        self._commands: dict[tuple[str, str], Any] = {}
        self._engine: dict[tuple[str, str], Any] = {}
        self._jobs: dict[tuple[str, str], Any] = {}
        self._last_sweep: float | None = None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- observers (the hot paths: a dict lookup, then the child's observe) -----------------

    def observe_http(self, method: str, route: str | None, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"  # clients may send any token: the label set stays bounded
        key = (method, route or UNMATCHED, status)
        child = self._http.get(key)
        if child is None:  # once per route and status: `{task_id:str}` reads `{task_id}`
            label = _TYPED.sub(r"{\1}", key[1])
            child = self._http[key] = self.http.labels(method, label, str(status))
        child.observe(seconds)

    def observe_command(self, name: str, error: BaseException | None, seconds: float) -> None:
        key = (name, command_outcome(error))
        child = self._commands.get(key)
        if child is None:
            child = self._commands[key] = self.commands.labels(*key)
        child.observe(seconds)

    def observe_engine_call(
        self, operation: str, error: BaseException | None, seconds: float
    ) -> None:
        key = (operation, engine_outcome(error))
        child = self._engine.get(key)
        if child is None:
            child = self._engine[key] = self.engine_calls.labels(*key)
        child.observe(seconds)

    def observe_job(self, job: str, outcome: str, seconds: float) -> None:
        key = (job, outcome)
        child = self._jobs.get(key)
        if child is None:
            child = self._jobs[key] = self.jobs.labels(*key)
        child.observe(seconds)

    def sweep_started(self, interval: float, scheduled_ms: int | None = None) -> None:
        """The lag: how late this sweep started against its schedule (arq's `score`, when it
        ran it), else against the previous sweep of this process plus the interval."""
        now = time.monotonic()
        if scheduled_ms is not None:
            self.poll_lag.set(max(0.0, time.time() - scheduled_ms / 1000))
        elif self._last_sweep is not None:
            self.poll_lag.set(max(0.0, now - self._last_sweep - interval))
        self._last_sweep = now


def command_outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, (ServiceBusyError, ReadModelLagError)):
        return "busy"
    if isinstance(error, (CommandError, DomainError)):
        return "refused"
    return "error"


def engine_outcome(error: BaseException | None) -> str:
    """ok, rejected (a 4xx), not_found (the run is unknown), malformed, unavailable."""
    if error is None:
        return "ok"
    if isinstance(error, EngineRunNotFoundError):
        return "not_found"
    if isinstance(error, EngineRejectedError):
        return "rejected"
    if isinstance(error, EngineProtocolError):
        return "malformed"
    return "unavailable"


METRICS = Metrics()
"""The process's series: one registry, shared by the API, its in-process worker and the
Engine client (a worker process serves the same object on METRICS_PORT)."""
