"""Protocols the application needs from outside."""

from __future__ import annotations

from typing import Protocol


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
