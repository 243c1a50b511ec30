"""What the controllers share: the services, the read views, and dispatch to the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from psycopg_pool import AsyncConnectionPool

from deduction.adapters.http.auth import XOperator, provide_operator
from deduction.application.services import Services
from deduction.projections.agents import AgentView, PostgresAgentView
from deduction.projections.catalog import CatalogView, PostgresCatalogView
from deduction.projections.history import HistoryView, PostgresHistoryView
from deduction.projections.logs import LogView, PostgresLogView
from deduction.projections.tasks import PostgresTaskView, TaskView

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReadViews:
    """The read models the API queries, made once per application."""

    tasks: TaskView
    agents: AgentView
    logs: LogView
    history: HistoryView
    catalog: CatalogView

    @classmethod
    def over(cls, pool: AsyncConnectionPool[Any], queue_aging: float = 300.0) -> ReadViews:
        return cls(
            PostgresTaskView(pool, queue_aging),
            PostgresAgentView(pool),
            PostgresLogView(pool),
            PostgresHistoryView(pool),
            PostgresCatalogView(pool),
        )


ServicesDep = NamedDependency[Services]
ReadsDep = NamedDependency[ReadViews]
ActorDep = NamedDependency[str]
"""The operator recorded in the events: the authenticated principal (see auth.py)."""


# Each provider takes the one before it as a parameter, so Litestar resolves a handler's
# dependencies one after another: two or more at the same depth are resolved in an anyio task
# group, which cost about 6 % of a detail read's CPU for two attribute lookups.


def provide_reads(state: State) -> ReadViews:
    reads: ReadViews = state.reads
    return reads


def provide_services(state: State, reads: ReadsDep) -> Services:
    services: Services = state.services
    return services


async def provide_actor(request: Request[Any, Any, Any], services: ServicesDep,
                        x_operator: XOperator = None) -> str:  # fmt: skip
    return await provide_operator(request, x_operator)


DEPENDENCIES = {
    "reads": Provide(provide_reads, sync_to_thread=False),
    "services": Provide(provide_services, sync_to_thread=False),
    "actor": Provide(provide_actor),
}


async def dispatch(follow_up: Callable[[int], Awaitable[None]], task_id: int) -> None:
    """Hand follow-up work to the worker; on failure the periodic sweep picks it up."""
    try:
        await follow_up(task_id)
    except Exception as e:  # noqa: BLE001 - the command already succeeded
        log.warning("task.dispatch_failed", task_id=task_id, error=str(e))
