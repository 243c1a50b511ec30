"""Path, query and header parameters shared by the controllers, with their bounds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar.params import HeaderParameter, PathParameter, QueryParameter

from deduction.adapters.http.schemas import OPERATOR
from deduction.domain.ids import MAX_ID
from deduction.domain.status import Status
from deduction.domain.text import MAX_SHORT_NAME_CHARS

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
StartTime = Annotated[
    datetime | None,
    QueryParameter(description="RFC 3339; lines with timestamp >= start_time"),
]
EndTime = Annotated[
    datetime | None,
    QueryParameter(description="RFC 3339; lines with timestamp < end_time"),
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
Operator = Annotated[
    str,
    HeaderParameter(
        name="X-Operator",
        min_length=1,
        max_length=MAX_SHORT_NAME_CHARS,
        pattern=OPERATOR,
        description="who sends the command (recorded in history); printable ASCII, "
        f"<= {MAX_SHORT_NAME_CHARS}",
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
