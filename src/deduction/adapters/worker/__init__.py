"""The worker: jobs, the in-process runner, arq settings and the dispatchers.

`arq deduction.adapters.worker.WorkerSettings` reads the environment when it asks for
`WorkerSettings`; importing this package alone reads nothing.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from deduction.adapters.worker.arq_worker import worker_settings
        from deduction.config import load_settings

        return type("WorkerSettings", (), worker_settings(load_settings()))
    raise AttributeError(name)
