"""Path, query and header parameters shared by the controllers, with their bounds."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from litestar.params import HeaderParameter, PathParameter, QueryParameter

from deduction.adapters.http.schemas import InputError
from deduction.domain.ids import MAX_ID
from deduction.domain.status import Status

# Spelled out for the type checker and the OpenAPI document; a unit test keeps it equal to
# deduction.domain.logs.LEVEL_NAMES.
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Order = Literal["desc", "asc"]

TaskId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="task id")]
ExecutionId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="agent execution id")]
EntryId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="catalog entry id")]

PageNo = Annotated[int, QueryParameter(ge=1, le=MAX_ID, description="1-based page number")]
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="items per page, 1..100")]
StatusFilter = Annotated[Status | None, QueryParameter(description="only items with this status")]
MinLevel = Annotated[
    Level | None,
    QueryParameter(description="minimum severity: ERROR returns ERROR and CRITICAL lines"),
]
LogLimit = Annotated[int, QueryParameter(ge=1, le=1000, description="lines per page, 1..1000")]
FROM_ZERO = {"minimum": 0}
"""Litestar 2.25 leaves out `minimum` when ge=0 (a falsy bound), so it is given again."""
DATE_TIME = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
"""An optional RFC 3339 time (a str parameter, so numbers are not read as epoch seconds)."""
StartTime = Annotated[
    str | None,
    QueryParameter(
        description="RFC 3339 time with a timezone; items at or after it", schema_extra=DATE_TIME
    ),
]
EndTime = Annotated[
    str | None,
    QueryParameter(
        description="RFC 3339 time with a timezone; items before it (at or before"
        " start_time: an empty range, so no items)",
        schema_extra=DATE_TIME,
    ),
]
LogOrder = Annotated[
    Order, QueryParameter(description="desc: newest first (default); asc: oldest first")
]
AfterId = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=MAX_ID,
        description="cursor: the next_cursor of the previous page; lines strictly after it",
    ),
]
MAX_TASK_PAGE = 100
"""The deepest numbered page of the task list (at most 9,900 rows skipped); deeper: keyset."""
TaskPageNo = Annotated[
    int,
    QueryParameter(
        ge=1,
        le=MAX_ID,  # checked by the handler, whose answer names keyset paging
        description=f"1-based page number, 1..{MAX_TASK_PAGE}; deeper pages: after_id",
        schema_extra={"maximum": MAX_TASK_PAGE},
    ),
]
TaskAfterId = Annotated[
    int | None,
    QueryParameter(
        ge=1,
        le=MAX_ID,
        description="cursor: the next_cursor of the previous page; tasks listed after it (older)",
    ),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7E]{1,255}$",
        description=(
            "makes a retried create safe: a second create with the same key and the same"
            " request answers the first one's task (even when its answer was lost); with a"
            " different request it is refused (422). Printable ASCII without spaces, <= 255;"
            " kept for as long as the task's events are"
        ),
    ),
]


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)


def instant(name: str, value: str | None) -> datetime | None:
    """A time parameter as RFC 3339 says it (the document's `date-time`): numbers, dates
    alone and times without a timezone are refused (422 naming the parameter)."""
    if value is None:
        return None
    match = _RFC3339.fullmatch(value)
    hint = f"{name} must be an RFC 3339 time with a timezone, e.g. 2025-11-12T10:00:00Z"
    if match is None:
        raise InputError(name, hint)
    if match["zone"] is None:
        raise InputError(
            name, f"{name} must include a timezone, e.g. 2025-11-12T10:00:00Z or +08:00"
        )
    fraction = (match["fraction"] or "")[:7]  # datetime keeps microseconds
    text = value[: match.start("fraction") if match["fraction"] else match.start("zone")]
    try:
        return datetime.fromisoformat(f"{text}{fraction}{match['zone'].upper()}")
    except ValueError:
        raise InputError(name, hint) from None


def time_range(
    start_time: str | None, end_time: str | None
) -> tuple[datetime | None, datetime | None]:
    """[start_time, end_time) from the two parameters; when end_time is not after start_time
    the range is empty, and so is the answer (not an error: the document cannot say it)."""
    return instant("start_time", start_time), instant("end_time", end_time)
