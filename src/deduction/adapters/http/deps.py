"""What the controllers share: the services, and dispatch of follow-up work to the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from deduction.application.services import Services

log = structlog.get_logger(__name__)

ServicesDep = NamedDependency[Services]


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


DEPENDENCIES = {"services": Provide(provide_services, sync_to_thread=False)}


async def dispatch(follow_up: Callable[[int], Awaitable[None]], task_id: int) -> None:
    """Hand follow-up work to the worker; on failure the periodic sweep picks it up."""
    try:
        await follow_up(task_id)
    except Exception as e:  # noqa: BLE001 - the command already succeeded
        log.warning("task.dispatch_failed", task_id=task_id, error=str(e))
