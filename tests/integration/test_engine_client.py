"""HttpEngine against a real HTTP server scripted per test (the Engine is untrusted)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from deduction.adapters.engine import CircuitBreaker, HttpEngine, RetryPolicy, engine_session
from deduction.application.ports import (
    EngineProtocolError,
    EngineRejectedError,
    EngineUnavailableError,
    RestartUnsupportedError,
)
from tests.support.api import free_port

Reply = tuple[int, bytes, float]  # status, body, delay before answering


class Scripted:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque([(200, b"{}", 0.0)])
        self.requests: list[dict[str, Any]] = []

    def script(self, *replies: Reply) -> None:
        self.replies = deque(replies)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.raw_path,
                              "query": list(request.query.items()),
                              "headers": dict(request.headers), "body": body})  # fmt: skip
        status, body, delay = self.replies[0] if len(self.replies) == 1 else self.replies.popleft()
        await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield scripted, f"http://127.0.0.1:{port}"
    await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with engine_session() as s:
        yield s


def ok(body: Any) -> Reply:
    return (200, msgspec.json.encode(body), 0.0)


FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.02)


async def test_submit_sends_the_idempotency_key_as_header_and_in_the_body(server, session) -> None:
    scripted, url = server
    scripted.script(ok({"engine_task_id": 42, "unknown": "ignored"}))
    engine = HttpEngine(session, url, 2)
    assert await engine.submit({"agents": [{"ref": 1}]}, "task-7") == "42"
    sent = scripted.requests[0]
    assert sent["headers"]["Idempotency-Key"] == "task-7"
    assert sent["headers"]["Accept"] == sent["headers"]["Content-Type"] == "application/json"
    assert msgspec.json.decode(sent["body"])["idempotency_key"] == "task-7"


async def test_status_decodes_loose_fields_and_maps_status_words(server, session) -> None:
    scripted, url = server
    scripted.script(ok({"status": "RUNNING", "agents": [
        {"engine_agent_id": 7, "status": "Success", "progress": 250.7, "vendor": [1]},
        {"engine_agent_id": "b", "status": "warming-up"},
        {"engine_agent_id": "c", "status": "error", "progress": None, "error": {"code": "x\u0000"},
         "result": "partial"},
    ]}))  # fmt: skip
    status = await HttpEngine(session, url, 2).task_status("t/1")
    assert scripted.requests[0]["path"] == "/engine/task/t%2F1/status"
    assert status.status == "running"
    assert [(a.engine_agent_id, a.status, a.progress) for a in status.agents] == [
        ("7", "completed", 100), ("b", "running", 0), ("c", "failed", 0)]  # fmt: skip
    assert status.agents[2].error == '{"code":"x\ufffd"}'  # no NUL reaches PostgreSQL
    assert status.agents[2].result == {"value": "partial"}


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"status": "running", "agents": "many"}', b'{"agents": []}',
     b'{"status": "running", "agents": [{"engine_agent_id": "%s", "status": "r"}]}' % (b"x" * 200)],
    ids=["garbage", "wrong-type", "missing-field", "id-too-long"],
)  # fmt: skip
async def test_a_malformed_answer_is_a_protocol_error(server, session, body: bytes) -> None:
    scripted, url = server
    scripted.script((200, body, 0.0))
    with pytest.raises(EngineProtocolError, match="malformed status response"):
        await HttpEngine(session, url, 2).task_status("t1")
    assert len(scripted.requests) == 1  # not retried: asking again gets the same garbage


async def test_a_response_larger_than_the_bound_is_refused(server, session) -> None:
    scripted, url = server
    scripted.script(ok({"logs": [{"timestamp": "2025-01-01T00:00:00Z", "message": "x" * 5000}]}))
    engine = HttpEngine(session, url, 2, max_response_bytes=4096)
    with pytest.raises(EngineProtocolError, match="exceeds 4096 bytes"):
        await engine.agent_logs("a1", None)


async def test_a_4xx_is_rejected_with_the_engines_message_and_not_retried(server, session) -> None:
    scripted, url = server
    scripted.script((422, b'{"message": "scheme not installed"}', 0.0))
    with pytest.raises(EngineRejectedError) as caught:
        await HttpEngine(session, url, 2, retry=FAST_RETRY).submit({"agents": []}, "k")
    assert (caught.value.status, caught.value.detail) == (422, "scheme not installed")
    assert len(scripted.requests) == 1


async def test_idempotent_calls_are_retried_through_5xx(server, session) -> None:
    scripted, url = server
    scripted.script((503, b"busy", 0.0), (502, b"", 0.0), ok({"logs": []}))
    engine = HttpEngine(session, url, 2, retry=FAST_RETRY)
    page = await engine.agent_logs("a1", "2025-01-01T00:00:00.000Z", 100)
    assert page.entries == []
    assert len(scripted.requests) == 3
    assert "since=2025-01-01T00:00:00.000Z" in scripted.requests[-1]["path"].replace("%3A", ":")


async def test_retries_stop_at_the_attempt_cap(server, session) -> None:
    scripted, url = server
    scripted.script((503, b'{"error": "down for maintenance"}', 0.0))
    engine = HttpEngine(session, url, 2, retry=FAST_RETRY)
    with pytest.raises(EngineUnavailableError, match="down for maintenance") as caught:
        await engine.stop("t1")
    assert len(scripted.requests) == 3
    assert caught.value.since.endswith("Z")


async def test_restart_is_not_retried_and_404_means_unsupported(server, session) -> None:
    scripted, url = server
    engine = HttpEngine(session, url, 2, retry=FAST_RETRY)
    scripted.script((503, b"", 0.0))
    with pytest.raises(EngineUnavailableError):
        await engine.restart_agent("a1")
    assert len(scripted.requests) == 1
    scripted.script((404, b"404: Not Found", 0.0))
    with pytest.raises(RestartUnsupportedError):
        await engine.restart_agent("a1")
    assert engine.restart_supported is False


async def test_every_call_is_bounded_by_the_timeout(server, session) -> None:
    scripted, url = server
    scripted.script((200, b'{"status": "running"}', 2.0))
    with pytest.raises(EngineUnavailableError, match="Timeout"):
        await HttpEngine(session, url, 0.2, retry=FAST_RETRY).task_status("t1")


async def test_the_circuit_opens_then_lets_one_probe_through_after_the_cooldown(
    server, session
) -> None:
    scripted, url = server
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=clock)
    engine = HttpEngine(session, url, 2, breaker=breaker, retry=FAST_RETRY)
    scripted.script((500, b"", 0.0))
    with pytest.raises(EngineUnavailableError):
        await engine.task_status("t1")
    assert engine.circuit_open() and len(scripted.requests) == 3
    with pytest.raises(EngineUnavailableError, match="opened the circuit"):
        await engine.task_status("t1")
    assert len(scripted.requests) == 3  # refused without a request
    clock.now = 10.5  # cool-down over: half-open
    assert not engine.circuit_open()
    scripted.script(ok({"status": "running", "agents": []}))
    assert (await engine.task_status("t1")).status == "running"
    assert breaker.state == "closed" and len(scripted.requests) == 4


async def test_a_failed_probe_opens_the_circuit_again(server, session) -> None:
    scripted, url = server
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10, clock=clock)
    engine = HttpEngine(session, url, 2, breaker=breaker, retry=RetryPolicy(attempts=1))
    scripted.script((500, b"", 0.0))
    for _ in range(2):
        with pytest.raises(EngineUnavailableError):
            await engine.stop("t1")
    clock.now = 11
    with pytest.raises(EngineUnavailableError, match="answered 500"):
        await engine.stop("t1")  # the probe
    assert breaker.state == "open" and len(scripted.requests) == 3


async def test_a_dead_engine_is_unavailable(session) -> None:
    engine = HttpEngine(session, f"http://127.0.0.1:{free_port()}", 1, retry=FAST_RETRY)
    with pytest.raises(EngineUnavailableError, match="Connect"):
        await engine.task_status("t1")


async def test_a_since_is_sent_percent_encoded_and_arrives_as_it_was(server, session) -> None:
    """`:` is sent as it is (allowed in a query); a `+` (an offset) must not arrive as a space,
    nor `&`, `#` or a space split or cut the query."""
    scripted, url = server
    scripted.script(ok({"logs": []}))
    engine = HttpEngine(session, url, 2)
    for since in ("2025-01-01T00:00:00.000Z", "2025-01-01T02:00:00.5+02:00", "a&limit=1 #é"):
        await engine.agent_logs("a/1", since, 50)
        sent = scripted.requests[-1]
        assert sent["query"] == [("since", since), ("limit", "50")]  # as the server reads it
        assert sent["path"].startswith("/engine/agent/a%2F1/logs?since=")
        assert sent["headers"]["Accept"] == "application/json"
        assert "Content-Type" not in sent["headers"]
    assert scripted.requests[0]["path"].endswith("?since=2025-01-01T00:00:00.000Z&limit=50")
    assert "since=2025-01-01T02:00:00.5%2B02:00&" in scripted.requests[1]["path"]


async def test_a_log_page_keeps_its_good_lines_beside_a_line_that_breaks_the_contract(
    server, session
) -> None:
    scripted, url = server
    good = {"timestamp": "2025-01-01T00:00:00.000Z", "level": "info", "message": "one"}
    bad = {"level": "info", "message": "no time"}
    engine = HttpEngine(session, url, 2)
    pages = []
    for logs in ([good, {**good, "message": "two"}], [good, bad, {**good, "message": "three"}]):
        scripted.script(ok({"logs": logs}))
        pages.append(await engine.agent_logs("a1", None))
        assert pages[-1].size == len(scripted.replies[0][1])  # the answer's bytes: the budget
    assert [e.message for e in pages[0].entries if not isinstance(e, bytes)] == ["one", "two"]
    assert [e if isinstance(e, bytes) else e.message for e in pages[1].entries] == [
        "one", msgspec.json.encode(bad), "three"]  # fmt: skip


@pytest.mark.parametrize("how", ["gzip", "chunked"])
async def test_a_body_that_outgrows_the_bound_unannounced_is_refused(session, how: str) -> None:
    """A compressed body (its Content-Length is the compressed size) or a chunked one (no
    length) is counted as it is read."""
    body = msgspec.json.encode({"logs": [{"timestamp": "2025-01-01T00:00:00Z",
                                          "message": "x" * 50_000}]})  # fmt: skip

    async def handle(request: web.Request) -> web.StreamResponse:
        if how == "gzip":
            response = web.Response(body=body, content_type="application/json")
            response.enable_compression(web.ContentCoding.gzip)
            return response
        stream = web.StreamResponse(headers={"Content-Type": "application/json"})
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        for at in range(0, len(body), 4096):
            await stream.write(body[at : at + 4096])
        await stream.write_eof()
        return stream

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(EngineProtocolError, match="exceeds 8192 bytes"):
            await HttpEngine(session, url, 2, max_response_bytes=8192).agent_logs("a1", None)
        page = await HttpEngine(session, url, 2).agent_logs("a1", None)  # within the bound
        assert len(page.entries) == 1 and not isinstance(page.entries[0], bytes)
    finally:
        await runner.cleanup()
