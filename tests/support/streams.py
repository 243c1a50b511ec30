"""Stream clients over real HTTP: an event-stream reader (aiohttp) and a WebSocket reader."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tests.support.api import TASK, Api

BOARD = "/api/v1/deduction/stream"


@dataclass(frozen=True)
class Message:
    id: str | None
    type: str
    data: dict[str, Any]

    @property
    def key(self) -> tuple[int, int]:
        position, _, rank = (self.id or "").partition(".")
        return int(position), int(rank) if rank else 99


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[Message | None]:
    """Parse text/event-stream as a browser's EventSource does; None for a comment line."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                data = msgspec.json.decode(fields["data"])
                yield Message(fields.get("id"), fields.get("event", "message"), data)
            fields = {}
        elif line.startswith(":"):
            yield None
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


@contextlib.asynccontextmanager
async def open_sse(
    api: Api, path: str, last_id: str | None = None, **params: str
) -> AsyncIterator[aiohttp.ClientResponse]:
    headers = {"Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with api.session.get(api.base + path, headers=headers, params=params,
                               timeout=timeout) as response:  # fmt: skip
        yield response


async def read_sse(
    api: Api, task_id: int, last_id: str | None = None, limit: int | None = None, **params: str
) -> list[Message]:
    """Messages of the task's SSE stream until `end` (or `limit` messages, then disconnect)."""
    out: list[Message] = []
    async with open_sse(api, f"{TASK}/{task_id}/stream", last_id, **params) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for m in sse_events(response):
            if m is None:
                continue
            out.append(m)
            if m.type == "end" or (limit is not None and len(out) >= limit):
                break
    return out


async def read_ws(
    api: Api, task_id: int, after: str | None = None, limit: int | None = None, **params: str
) -> list[Message]:
    """Messages of the task's WebSocket until `end` (or `limit` messages, then disconnect)."""
    out: list[Message] = []
    query = {**params, **({"after": after} if after else {})}
    url = api.base.replace("http", "ws", 1) + f"{TASK}/{task_id}/ws"
    async with api.session.ws_connect(url, params=query, heartbeat=None) as ws:
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            data = msgspec.json.decode(frame.data)
            if data["type"] == "heartbeat":
                continue
            out.append(Message(data.get("id"), data["type"], data))
            if data["type"] == "end" or (limit is not None and len(out) >= limit):
                break
    return out


def body(m: Message) -> dict[str, Any]:
    """The message's payload as both transports carry it (SSE has the type in `event:`)."""
    return {k: v for k, v in m.data.items() if k != "type"}
