"""What the controllers share: the services, the read views, and dispatch to the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from psycopg_pool import AsyncConnectionPool

from deduction.adapters.http.auth import provide_operator
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


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def provide_reads(state: State) -> ReadViews:
    reads: ReadViews = state.reads
    return reads


DEPENDENCIES = {
    "services": Provide(provide_services, sync_to_thread=False),
    "reads": Provide(provide_reads, sync_to_thread=False),
    "actor": Provide(provide_operator),
}


async def dispatch(follow_up: Callable[[int], Awaitable[None]], task_id: int) -> None:
    """Hand follow-up work to the worker; on failure the periodic sweep picks it up."""
    try:
        await follow_up(task_id)
    except Exception as e:  # noqa: BLE001 - the command already succeeded
        log.warning("task.dispatch_failed", task_id=task_id, error=str(e))
