"""ExecutionLog: the log lines of one execution, kept apart so loading an execution stays cheap."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from deduction.domain.times import utc_now

LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVELS: dict[str, int] = dict(zip(LEVEL_NAMES, (10, 20, 30, 40, 50), strict=True))
DEFAULT_LEVEL = "INFO"
# Words some Engines send for our levels.
LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR", "CRIT": "CRITICAL"}


@lru_cache(maxsize=65_536)  # every poll names each of its agents' streams
def log_stream_id(execution_id: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"deduction:execution-log:{execution_id}")


class ExecutionLog(Aggregate):
    """An append-only stream of LogsReceived batches; never loaded whole.

    Each batch carries the ingestion cursor reached after it, so the poller
    reads only the newest event of the stream to know where to resume.
    """

    @dataclass(frozen=True)  # as the library's own events are: lets type checkers see the fields
    class LogsReceived(Aggregate.Event):
        execution_id: int
        task_id: int
        lines: list[dict[str, Any]]
        cursor: dict[str, Any]

    @staticmethod
    def batch(
        version: int,
        execution_id: int,
        task_id: int,
        lines: list[dict[str, Any]],
        cursor: dict[str, Any],
    ) -> ExecutionLog.LogsReceived:
        """The event for the next batch, at `version` (one past the stream's last)."""
        return ExecutionLog.LogsReceived(
            originator_id=log_stream_id(execution_id),
            originator_version=version,
            timestamp=utc_now(),
            execution_id=execution_id,
            task_id=task_id,
            lines=lines,
            cursor=cursor,
        )
