"""X-Request-ID on every answer and in every log line of the request (an access line at DEBUG)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from uuid import uuid4

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Receive, Scope, Send

log = structlog.get_logger(__name__)
HEADER = "X-Request-ID"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The caller's id when it is a sane token (it ends up in logs), else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _ACCEPTED.fullmatch(text):
                return text
    return uuid4().hex


Observe = Callable[[str, "str | None", int, float], None]


async def with_request_id(
    scope: Scope, receive: Receive, send: Send, app: object, observe: Observe | None = None
) -> None:
    """Run `app` with the request id bound into structlog and set on the response; with
    `observe`, tell it each HTTP request's method, route template, status and seconds."""
    started = time.perf_counter()
    request_id = request_id_of(scope)
    scope.setdefault("state", {})["request_id"] = request_id

    status: list[int] = []

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableScopeHeaders.from_message(message)[HEADER] = request_id
            status.append(message["status"])
        await send(message)

    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            await app(scope, receive, send_with_id)  # type: ignore[operator]
        finally:
            method: str | None = scope.get("method")  # type: ignore[assignment]  # None: a WebSocket
            if observe is not None and method is not None:
                observe(method, scope.get("path_template"),
                        status[0] if status else 500, time.perf_counter() - started)  # fmt: skip
        log.debug("http.answered", method=scope.get("method", "WS"), path=scope["path"],
                  status=status[0] if status else None)  # fmt: skip
