"""The worker: jobs, the in-process runner, arq settings and the dispatchers.

`deduction worker` (or `arq deduction.bootstrap.WorkerSettings`) runs them on arq; without
Redis, `deduction serve` runs them in-process.
"""

from __future__ import annotations

from deduction.adapters.worker.dispatch import JobDispatcher, arq_enqueuer, job_id
from deduction.adapters.worker.inprocess import InProcessWorker
from deduction.adapters.worker.jobs import (
    JOBS,
    job_timeout,
    poll_task,
    purge_logs,
    send_stop,
    send_update,
    submit_task,
    sweep,
)

__all__ = [
    "JOBS",
    "InProcessWorker",
    "JobDispatcher",
    "arq_enqueuer",
    "job_id",
    "job_timeout",
    "poll_task",
    "purge_logs",
    "send_stop",
    "send_update",
    "submit_task",
    "sweep",
]
