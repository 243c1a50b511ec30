"""Protocols the application needs from outside: the worker dispatcher, the read models, the
event store's bulk reads and the Engine (with the shapes of its answers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from uuid import UUID

import msgspec

from deduction.domain.text import (
    MAX_ENGINE_ID,
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    NUL,
    without_nul,
)


class Dispatcher(Protocol):
    """Hands follow-up work for a task to the worker (arq, or in-process)."""

    async def task_created(self, task_id: int) -> None: ...

    async def stop_requested(self, task_id: int) -> None: ...

    async def update_requested(self, task_id: int) -> None: ...


class NoDispatcher:
    """Used where no worker runs (CLI tools, read-only processes): the sweep picks work up."""

    async def task_created(self, task_id: int) -> None:
        return None

    async def stop_requested(self, task_id: int) -> None:
        return None

    async def update_requested(self, task_id: int) -> None:
        return None


class ReadModels(Protocol):
    """The projections as commands see them: told when events were saved, waited on."""

    def kick(self, topics: frozenset[str] = frozenset()) -> None:
        """Events were saved: the read models that take one of `topics` (all when empty)
        look for them now."""
        ...

    async def wait_for(
        self, position: int, timeout: float, topics: frozenset[str] = frozenset()
    ) -> bool:
        """True once every read model that takes one of `topics` (all of them when empty)
        includes `position`; False after `timeout` seconds."""
        ...


# -- the event store -------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamHead:
    """The newest event of a log stream: its version and the log cursor it carries."""

    version: int
    cursor: dict[str, Any] | None


class EventStreams(Protocol):
    """Reads a poll makes of the event store, in one round trip where the store allows."""

    def load(
        self, aggregate_ids: Sequence[UUID], newest_of: Sequence[UUID]
    ) -> tuple[dict[UUID, Any], dict[UUID, StreamHead]]:
        """The aggregates with these ids (absent ones left out), and the head of each of the
        `newest_of` log streams (empty streams left out)."""
        ...

    def read_after(
        self, versions: Mapping[UUID, int], heads_after: Mapping[UUID, int]
    ) -> tuple[dict[UUID, list[Any]], dict[UUID, StreamHead]]:
        """What was saved after versions the caller holds: each aggregate's later domain
        events, oldest first (aggregates with none left out), and the head of each log
        stream whose newest event is past the given version (others left out)."""
        ...


# -- the Engine ------------------------------------------------------------------------------

ENGINE_STATUSES = frozenset({"pending", "running", "completed", "failed", "stopped"})
_STATUS_ALIASES = {
    "queued": "pending", "waiting": "pending", "created": "pending", "scheduled": "pending",
    "started": "running", "in_progress": "running", "active": "running",
    "success": "completed", "succeeded": "completed", "done": "completed", "finished": "completed",
    "error": "failed", "errored": "failed", "crashed": "failed",
    "cancelled": "stopped", "canceled": "stopped", "killed": "stopped", "aborted": "stopped",
}  # fmt: skip


def engine_status(raw: str) -> str:
    """The Engine's status word mapped onto ours; anything unknown counts as still running."""
    word = raw.strip().lower()
    return word if word in ENGINE_STATUSES else _STATUS_ALIASES.get(word, "running")


def _engine_id(value: str | int, what: str) -> str:
    text = str(value)
    if not 0 < len(text) <= MAX_ENGINE_ID or NUL in text:
        raise ValueError(f"{what} must have 1..{MAX_ENGINE_ID} characters and no NUL")
    return text


class EngineAgent(msgspec.Struct):
    """One agent in a status report: the 4.1 fields, then optional extras."""

    engine_agent_id: str | int
    status: str
    progress: int | float | None = 0
    result: Any = None
    error: Any = None
    ref: str | int | None = None  # extra: our execution id, echoed back
    attempt: int | None = None  # extra: the agent's attempt, 1 first and +1 per restart

    def __post_init__(self) -> None:
        self.engine_agent_id = _engine_id(self.engine_agent_id, "engine_agent_id")
        self.status = engine_status(self.status)
        self.progress = max(0, min(100, int(self.progress or 0)))
        if self.result is not None:
            result = without_nul(self.result if isinstance(self.result, dict)
                                 else {"value": self.result})  # fmt: skip
            encoded = msgspec.json.encode(result)
            if len(encoded) > MAX_RESULT_BYTES:
                result = {"truncated": True, "preview": encoded[:1000].decode("utf-8", "replace")}
            self.result = result
        if self.error is not None:
            error = without_nul(self.error)
            if not isinstance(error, str):
                error = msgspec.json.encode(error).decode()
            self.error = error[:MAX_ERROR_CHARS]


class EngineTaskStatus(msgspec.Struct):
    """GET /engine/task/{id}/status: agents in the order they were submitted."""

    status: str
    agents: list[EngineAgent] = []

    def __post_init__(self) -> None:
        self.status = engine_status(self.status)


class EngineLogLine(msgspec.Struct):
    """One entry of GET /engine/agent/{id}/logs; `seq` is an optional per-agent sequence."""

    timestamp: str | int | float
    level: str | None = "INFO"
    message: Any = ""
    source: Any = None
    extra: Any = None
    seq: int | None = None


class EngineLoadFigures(msgspec.Struct):
    """Not part of 4.1: the Engine's CPU and memory use in percent (GET /engine/load)."""

    cpu_percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    memory_percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None


class EngineSubmitted(msgspec.Struct):
    engine_task_id: str | int

    def __post_init__(self) -> None:
        self.engine_task_id = _engine_id(self.engine_task_id, "engine_task_id")


class EngineLogs(msgspec.Struct):
    """A logs answer with each line left undecoded, so one bad line does not spoil the page."""

    logs: list[msgspec.Raw]


@dataclass(frozen=True)
class EngineLogPage:
    """One logs answer in the Engine's order: each line decoded, or its raw bytes when it
    could not be."""

    entries: list[EngineLogLine | bytes]
    size: int = 0  # bytes of the answer as it came over the wire


class EngineError(Exception):
    """An Engine call did not succeed."""


class EngineUnavailableError(EngineError):
    """The Engine did not answer usably (connection, timeout, 5xx, open circuit).

    `since` is when the current run of failures began (ISO 8601, UTC).
    """

    def __init__(self, message: str, since: str) -> None:
        super().__init__(message)
        self.since = since


class EngineRejectedError(EngineError):
    """The Engine answered 4xx: retrying the same request cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the Engine answered {status}: {message}")
        self.status, self.detail = status, message


class EngineRunNotFoundError(EngineRejectedError):
    """The Engine answered 404 for a run or one of its agents, or reported a run whose agents
    are not the ones submitted: it no longer knows the run it was given (lost in a restart)."""


class EngineProtocolError(EngineUnavailableError):
    """The Engine answered 2xx with a body that breaks the contract (malformed, too large)."""


class RestartUnsupportedError(EngineRejectedError):
    """The Engine has no restart operation (404/405)."""


class Engine(Protocol):
    """The five operations of the plan's Engine API (4.1), plus an optional agent restart."""

    async def submit(self, payload: dict[str, Any], idempotency_key: str) -> str: ...

    async def task_status(self, engine_task_id: str) -> EngineTaskStatus: ...

    async def agent_logs(
        self, engine_agent_id: str, since: str | None, limit: int | None = None
    ) -> EngineLogPage: ...

    async def update(self, engine_task_id: str, payload: dict[str, Any]) -> None: ...

    async def stop(self, engine_task_id: str) -> None: ...

    async def restart_agent(self, engine_agent_id: str) -> None: ...

    async def load(self) -> EngineLoadFigures | None:
        """The Engine's load figures; None when it offers none (a 404: 4.1 alone)."""
        ...

    def circuit_open(self) -> bool:
        """True while calls are refused without reaching the Engine."""
        ...

    def circuit_state(self) -> str:
        """closed, open or half-open (one probe call let through)."""
        ...

    def failing_since(self) -> str | None:
        """When the current run of failed calls began (ISO 8601, UTC); None while it answers."""
        ...

    @property
    def restart_supported(self) -> bool | None:
        """False once the Engine said it cannot restart agents, True once it did; else None."""
        ...
