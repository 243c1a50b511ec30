"""Audit endpoints: the stored events of a task or of the whole store, the export file, and
state as of a moment for the read endpoints (`as_of`, `as_of_position`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import ResponseHeader
from litestar.params import QueryParameter
from litestar.response import Stream

from deduction.adapters.audit_chain import export_task
from deduction.adapters.audit_store import PostgresEventLog
from deduction.adapters.http import auth
from deduction.adapters.http.deps import ServicesDep
from deduction.adapters.http.envelope import Envelope, Timestamp, ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import (
    DATE_TIME,
    FROM_ZERO,
    EndTime,
    StartTime,
    TaskId,
    instant,
    time_range,
)
from deduction.adapters.http.responses import _named
from deduction.adapters.http.schemas import InputError
from deduction.application.audit import (
    EventLog,
    EventQuery,
    TaskStreams,
    known_topics,
    read_event,
    topics_of,
)
from deduction.application.audit_file import event_json
from deduction.application.service import NotFoundError
from deduction.application.services import Services
from deduction.domain.ids import MAX_ID
from deduction.projections.as_of import AsOfReader, TaskState
from deduction.projections.as_of_snapshots import PostgresSnapshots

AS_OF_HEADER = "X-As-Of-Position"
AS_OF_HEADERS = [
    ResponseHeader(
        name=AS_OF_HEADER,
        description="with as_of or as_of_position: the event store position the answer reflects",
        documentation_only=True,
    )
]
AsOf = Annotated[
    str | None,
    QueryParameter(
        description="RFC 3339 time with a timezone: the answer as it was at this moment,"
        " from the events (with as_of_position too: as of the earlier of the two)",
        schema_extra=DATE_TIME,
    ),
]
AsOfPosition = Annotated[
    int | None,
    QueryParameter(
        ge=0,
        le=MAX_ID,
        schema_extra=FROM_ZERO,
        description="the answer as it was at this event position (with as_of too: as of"
        " the earlier of the two)",
    ),
]
After = Annotated[
    int,
    QueryParameter(ge=0, le=MAX_ID, description="cursor: events after it", schema_extra=FROM_ZERO),
]
EventLimit = Annotated[int, QueryParameter(ge=1, le=1000, description="events per page, 1..1000")]
EventTypes = Annotated[
    list[str] | None,
    QueryParameter(
        name="type",
        description="only these event types, e.g. DeductionTask.StatusChanged",
        schema_extra={"items": {"type": "string", "enum": sorted(known_topics().values())}},
    ),
]
AggregateType = Literal["DeductionTask", "AgentExecution", "ExecutionLog"]
AggregateTypeFilter = Annotated[
    AggregateType | None, QueryParameter(description="only events of this kind of aggregate")
]
AggregateIdFilter = Annotated[
    UUID | None, QueryParameter(description="only events of this aggregate (its UUID)")
]
Include = Annotated[
    Literal["logs"] | None,
    QueryParameter(description="logs: log batches with every line (default: a summary)"),
]


class StoredEventItem(msgspec.Struct):
    """One stored event: where it is, what it is, who caused it, and its fields as stored
    (after upcasting; `schema_version` is the version it was stored with)."""

    position: int
    aggregate_type: str
    aggregate_id: str
    version: int
    type: str
    timestamp: Timestamp
    operator: str | None
    schema_version: int
    fields: dict[str, Any]


class EventPage(msgspec.Struct):
    events: list[StoredEventItem]
    next_cursor: int | None
    """Pass as `after` for the next page; null when this page is the last."""


EventPageResponse = Annotated[Envelope[EventPage], _named("EventPageResponse")]
_to_items = msgspec.convert


def event_log(services: Services) -> EventLog:
    return PostgresEventLog(services.pool)


def _types(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    unknown = sorted(set(names) - set(known_topics().values()))
    if unknown:
        raise InputError("type", f"unknown event type(s): {', '.join(unknown)}")
    return topics_of(names)


async def _page(log: EventLog, query: EventQuery, full_logs: bool) -> EventPage:
    records = await log.select(query)
    items = [event_json(read_event(r, full_logs=full_logs)) for r in records]
    full = query.limit is not None and len(records) == query.limit
    return EventPage(
        events=_to_items(items, list[StoredEventItem]),
        next_cursor=records[-1].position if full and records else None,
    )


def _aggregates(streams: TaskStreams, kind: AggregateType | None, one: UUID | None) -> list[UUID]:
    ids = streams.all_ids
    if kind == "DeductionTask":
        ids = ids[:1]
    elif kind == "AgentExecution":
        ids = ids[1 : 1 + len(streams.execution_ids)]
    elif kind == "ExecutionLog":
        ids = ids[1 + len(streams.execution_ids) :]
    return [i for i in ids if one is None or i == one]


async def task_streams(log: EventLog, task_id: int) -> TaskStreams:
    streams = await log.task_streams(task_id)
    if streams is None:
        raise NotFoundError("task", task_id)
    return streams


async def task_state(
    services: Services, task_id: int, as_of: str | None, as_of_position: int | None
) -> tuple[TaskStreams, TaskState]:
    """The task's rows as of a moment or a position, or the earlier of both, rebuilt from its
    events onto the snapshot before it (404 when the task did not exist yet)."""
    moment = instant("as_of", as_of)
    log = event_log(services)
    snapshots = PostgresSnapshots(services.pool, services.settings.as_of_snapshot_every)
    reader = AsOfReader(log, snapshots)
    if moment is None:  # one statement: the task, its snapshot and the events after it
        found, state = await reader.at_position(task_id, as_of_position or 0)
        if found is None:
            raise NotFoundError("task", task_id)
        streams = found
    else:
        streams = await task_streams(log, task_id)
        state = await reader.state(streams, as_of_position, moment)
    if state.task is None:
        raise NotFoundError("task", task_id)
    return streams, state


def as_of_response(data: Any, position: int) -> Response[Any]:
    return Response(ok(data), headers={AS_OF_HEADER: str(position)})


class AuditController(Controller):
    path = "/api/v1"
    tags = ("audit",)

    @get(
        "/deduction/task/{task_id:str}/events",
        operation_id="listTaskEvents",
        opt=auth.AUDIT,
        responses=documented(404, 422, 503),
    )
    async def task_events(
        self,
        services: ServicesDep,
        task_id: TaskId,
        after: After = 0,
        limit: EventLimit = 100,
        event_type: EventTypes = None,
        aggregate_type: AggregateTypeFilter = None,
        aggregate_id: AggregateIdFilter = None,
        start_time: StartTime = None,
        end_time: EndTime = None,
        include: Include = None,
    ) -> EventPageResponse:
        """Every stored event of the task, its executions and their log streams, oldest first,
        paged by position; filtered by type, aggregate and time range [start_time, end_time)."""
        start, end = time_range(start_time, end_time)
        log = event_log(services)
        streams = await task_streams(log, task_id)
        query = EventQuery(
            after=after, limit=limit, topics=_types(event_type),
            aggregate_ids=_aggregates(streams, aggregate_type, aggregate_id),
            start=start, end=end,
        )  # fmt: skip
        return ok(await _page(log, query, include == "logs"))

    @get("/events", operation_id="listEvents", responses=documented(422, 503), opt=auth.AUDIT)
    async def all_events(
        self,
        services: ServicesDep,
        after: After = 0,
        limit: EventLimit = 100,
        event_type: EventTypes = None,
        include: Include = None,
    ) -> EventPageResponse:
        """Every stored event of the service after a position, oldest first (to follow the
        whole record); log batches are summarised unless include=logs."""
        query = EventQuery(after=after, limit=limit, topics=_types(event_type))
        return ok(await _page(event_log(services), query, include == "logs"))

    @get(
        "/deduction/task/{task_id:str}/export",
        operation_id="exportTask",
        opt=auth.AUDIT,
        media_type="application/x-ndjson",
        responses=documented(404, 422, 503),
    )
    async def export(self, services: ServicesDep, task_id: TaskId) -> Stream:
        """The task's audit file: JSON Lines of its chained events (every log line included),
        then a manifest; `deduction audit verify --file` checks it with no database."""
        streams = await task_streams(event_log(services), task_id)

        async def lines() -> AsyncIterator[bytes]:
            async with services.pool.connection() as conn:
                async for line in export_task(conn, streams):
                    yield line

        return Stream(
            lines(),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="task-{task_id}.audit.jsonl"'},
        )
