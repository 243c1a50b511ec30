"""Live streams of a task (SSE and WebSocket) and of the task board (SSE), resumable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, WebSocket, get, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import Response, Stream

from deduction.adapters.http import auth
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import MinLevel, StatusFilter, TaskId
from deduction.adapters.http.schemas import InputError
from deduction.adapters.http.stream_hub import StreamHub, Subscriber
from deduction.adapters.http.stream_messages import (
    SSE_HEARTBEAT,
    SSE_RETRY,
    heartbeat_text,
    parse_token,
)
from deduction.application.service import NotFoundError
from deduction.application.services import ServiceBusyError
from deduction.config import Settings
from deduction.domain.logs import LEVELS
from deduction.projections.changes import RANKS

MESSAGE_ID = r"^[0-9]{1,18}(\.[0-9]{1,9})?$"  # a position, or a message id such as 12.1
After = Annotated[
    str | None,
    QueryParameter(
        max_length=40,
        pattern=MESSAGE_ID,
        description="resume after this message id (or position); Last-Event-ID wins when given",
        examples=[Example(value="1234")],
    ),
]
LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        max_length=40,
        pattern=MESSAGE_ID,
        description="sent by EventSource when it reconnects: the id of the last message it got",
    ),
]
ENDED = ResponseSpec(None, description="The stream ended at or before the given id: no more")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Close codes of the WebSocket: as the HTTP statuses of the SSE endpoint would say it.
WS_NOT_FOUND, WS_INVALID, WS_BUSY = 4404, 4422, 1013


def _hub(state: State) -> tuple[StreamHub, Settings]:
    return state.streams, state.services.settings


def _level(level: str | None) -> int:
    return LEVELS[level] if level else min(LEVELS.values())


async def _open_task(
    hub: StreamHub, task_id: int, level: str | None, cursor: str | None, name: str
) -> tuple[Subscriber | None, tuple[int, int]]:
    """The subscriber, and the key to resume after; no subscriber when the task's stream
    ended at or before it (nothing more will come)."""
    after = parse_token(cursor, name)
    if not await hub.changes.task_exists(task_id):
        raise NotFoundError("task", task_id)
    ended = await hub.changes.ended_at(task_id)
    if ended is not None and (ended, RANKS["end"]) <= after:
        return None, after
    return hub.open(task_id, _level(level), None), after


async def _events(
    hub: StreamHub, settings: Settings, sub: Subscriber, after: tuple[int, int]
) -> AsyncIterator[bytes]:
    try:
        yield SSE_RETRY
        follow = hub.follow(sub, after, settings.stream_heartbeat, settings.stream_max_age)
        async for batch in follow:  # one write for all a wake-up brought
            yield SSE_HEARTBEAT if batch is None else b"".join(f.sse for f in batch)
    finally:
        hub.close(sub)


def _stream(hub: StreamHub, settings: Settings, sub: Subscriber, after: tuple[int, int]) -> Stream:
    return Stream(_events(hub, settings, sub, after), media_type="text/event-stream",
                  headers=SSE_HEADERS)  # fmt: skip


class StreamController(Controller):
    path = "/api/v1/deduction"
    tags = ("streams",)

    @get(
        "/task/{task_id:str}/stream",
        operation_id="streamTask",
        opt=auth.READ,
        media_type="text/event-stream",
        responses={**documented(404, 422, 503), 204: ENDED},
    )
    async def task_stream(
        self,
        state: State,
        task_id: TaskId,
        level: MinLevel = None,
        after: After = None,
        last_event_id: LastEventId = None,
    ) -> Stream:
        """Server-Sent Events of the task: task, agent, logs, history and end messages, in
        event-store order; `id:` resumes (docs/api.md). 204 when the stream already ended."""
        hub, settings = _hub(state)
        sub, key = await _open_task(hub, task_id, level, last_event_id or after, "after")
        if sub is None:
            return Response(None, status_code=204)  # type: ignore[return-value]  # EventSource stops
        return _stream(hub, settings, sub, key)

    @get(
        "/stream",
        operation_id="streamBoard",
        opt=auth.READ,
        media_type="text/event-stream",
        responses=documented(422, 503),
    )
    async def board_stream(
        self,
        state: State,
        status: StatusFilter = None,
        after: After = None,
        last_event_id: LastEventId = None,
    ) -> Stream:
        """Server-Sent Events of every task's state (task messages only), for a list page;
        with `status`, the tasks in that status and those that just left it."""
        hub, settings = _hub(state)
        key = parse_token(last_event_id or after, "after")
        return _stream(hub, settings, hub.open(None, 0, status), key)


@websocket("/api/v1/deduction/task/{task_id:str}/ws", opt=auth.READ)
async def task_socket(
    socket: WebSocket[Any, Any, Any], task_id: TaskId, level: MinLevel = None, after: After = None
) -> None:
    """The task stream's messages as WebSocket text frames; `?after=` resumes."""
    await socket.accept()
    hub, settings = _hub(socket.app.state)
    try:
        sub, key = await _open_task(hub, task_id, level, after, "after")
    except (NotFoundError, InputError, ServiceBusyError) as e:
        code = {NotFoundError: WS_NOT_FOUND, InputError: WS_INVALID}.get(type(e), WS_BUSY)
        await socket.close(code=code, reason=str(e)[:120])
        return
    if sub is None:
        await socket.close(code=1000, reason="the task's stream has ended")
        return
    try:
        sender = asyncio.create_task(_send(socket, hub, settings, sub, key))
        reader = asyncio.create_task(_drain(socket))
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        for job in (sender, reader):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await job
    finally:
        hub.close(sub)


async def _send(
    socket: WebSocket[Any, Any, Any],
    hub: StreamHub,
    settings: Settings,
    sub: Subscriber,
    after: tuple[int, int],
) -> None:
    async for batch in hub.follow(sub, after, settings.stream_heartbeat, settings.stream_max_age):
        for text in [heartbeat_text(hub.fetched)] if batch is None else [f.text for f in batch]:
            await socket.send_data(text, mode="text")
    with contextlib.suppress(Exception):  # the client may be gone already
        await socket.close(code=1000)


async def _drain(socket: WebSocket[Any, Any, Any]) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass
