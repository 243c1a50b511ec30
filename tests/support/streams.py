"""Stream clients over real HTTP: an event-stream reader (aiohttp) and a WebSocket reader."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from tests.support.api import TASK, Api, task_detail

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
            fields[name] = value.removeprefix(" ")


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
    api: Api,
    task_id: int,
    last_id: str | None = None,
    limit: int | None = None,
    out: list[Message] | None = None,
    **params: str,
) -> list[Message]:
    """Messages of the task's SSE stream until `end` (or `limit` messages, then disconnect),
    appended to `out` as they arrive (so a reader cancelled midway keeps what it got)."""
    out = [] if out is None else out
    start = len(out)
    async with open_sse(api, f"{TASK}/{task_id}/stream", last_id, **params) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for m in sse_events(response):
            if m is None:
                continue
            out.append(m)
            if m.type == "end" or (limit is not None and len(out) - start >= limit):
                break
    return out[start:]


async def read_ws(
    api: Api,
    task_id: int,
    after: str | None = None,
    limit: int | None = None,
    out: list[Message] | None = None,
    **params: str,
) -> list[Message]:
    """Messages of the task's WebSocket until `end` (or `limit` messages), as read_sse."""
    out = [] if out is None else out
    start = len(out)
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
            if data["type"] == "end" or (limit is not None and len(out) - start >= limit):
                break
    return out[start:]


def body(m: Message) -> dict[str, Any]:
    """The message's payload as both transports carry it (SSE has the type in `event:`)."""
    return {k: v for k, v in m.data.items() if k != "type"}


async def history_of(api: Api, task_id: int) -> list[dict[str, Any]]:
    status, answer = await api.call("GET", f"{TASK}/{task_id}/history")
    assert status == 200, answer
    return list(answer["data"])


async def lines_of(api: Api, task_id: int, level: str | None = None) -> list[dict[str, Any]]:
    """Every stored line of the task, oldest first, through the log endpoint's pages."""
    out: list[dict[str, Any]] = []
    params = {"order": "asc", "limit": "1000", **({"level": level} if level else {})}
    while True:
        status, answer = await api.call("GET", f"{TASK}/{task_id}/logs", params=params)
        assert status == 200, answer
        out += answer["data"]["logs"]
        if answer["data"]["next_cursor"] is None:
            return out
        params["after_id"] = str(answer["data"]["next_cursor"])


def streamed_lines(messages: list[Message]) -> list[dict[str, Any]]:
    return [line for m in messages if m.type == "logs" for line in m.data["lines"]]


def assert_in_order_once(messages: list[Message]) -> None:
    keys = [m.key for m in messages]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), keys


async def assert_everything(api: Api, task_id: int, messages: list[Message]) -> None:
    """The stream carried every history entry and log line the endpoints show, in order,
    the task's and each agent's last state, and ended once, last."""
    assert_in_order_once(messages)
    assert [m.data["entry"] for m in messages if m.type == "history"] == await history_of(
        api, task_id
    )
    assert streamed_lines(messages) == await lines_of(api, task_id)
    detail = await task_detail(api, task_id)
    task = [m.data["task"] for m in messages if m.type == "task"][-1]
    assert {k: detail[k] for k in task} == task
    for agent in detail["agent_executions"]:
        last = [m.data["agent"] for m in messages if m.type == "agent"
                and m.data["agent"]["id"] == agent["id"]][-1]  # fmt: skip
        assert {k: agent[k] for k in last} == last
    assert [m.type for m in messages].count("end") == 1 and messages[-1].type == "end"
    assert messages[-1].data["status"] == detail["status"]
