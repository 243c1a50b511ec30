"""ExecutionLog: the log lines of one execution, kept apart so loading an execution stays cheap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

LEVELS: dict[str, int] = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def log_stream_id(execution_id: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"deduction:execution-log:{execution_id}")


class ExecutionLog(Aggregate):
    """An append-only stream of LogsReceived batches; never loaded whole.

    Each batch carries the ingestion cursor reached after it, so the poller
    reads only the newest event of the stream to know where to resume.
    """

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
            timestamp=datetime.now(UTC),
            execution_id=execution_id,
            task_id=task_id,
            lines=lines,
            cursor=cursor,
        )
