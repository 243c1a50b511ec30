"""HttpEngine: the aiohttp adapter of the Engine port (the plan's API 4.1, untrusted)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from deduction.adapters.engine.resilience import CircuitBreaker, RetryPolicy
from deduction.application.ports import (
    EngineError,
    EngineLoadFigures,
    EngineLogLine,
    EngineLogPage,
    EngineLogs,
    EngineProtocolError,
    EngineRejectedError,
    EngineRunNotFoundError,
    EngineSubmitted,
    EngineTaskStatus,
    EngineUnavailableError,
    RestartUnsupportedError,
)
from deduction.domain.text import without_nul
from deduction.domain.times import utc_now_iso

log = structlog.get_logger(__name__)
T = TypeVar("T")
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_error_body = msgspec.json.Decoder()
_IDENTITY = frozenset({"", "identity"})
# The headers of a call without a body, and with one: made once (aiohttp copies them).
_ACCEPT = CIMultiDictProxy(CIMultiDict({"Accept": "application/json"}))
_ACCEPT_JSON_BODY = CIMultiDictProxy(
    CIMultiDict({"Accept": "application/json", "Content-Type": "application/json"})
)
_PLAIN_QUERY_VALUE = re.compile(r"[A-Za-z0-9._~:-]*")  # nothing in it to percent-encode
Observe = Callable[[str, BaseException | None, float], None]


class _Page(msgspec.Struct):
    """A logs answer whose every line keeps the contract: decoded in one pass."""

    logs: list[EngineLogLine]


def engine_session(limit: int = 100) -> aiohttp.ClientSession:
    """The aiohttp session of a process's Engine calls: keep-alive connections (at most `limit`
    at once), no cookie jar (the Engine sets none; filtering cookies costs CPU on every call)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


class HttpEngine:
    """Calls the Engine over HTTP; every operation is bounded by `timeout` seconds in total.

    Only idempotent operations are retried (status, logs, update, stop, and submit, which
    carries the idempotency key); restart is not. A shared circuit breaker refuses calls
    while the Engine keeps failing.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeout: float,
        *,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._session, self._base_url, self._timeout = session, base_url.rstrip("/"), timeout
        self._max_bytes = max_response_bytes
        self.breaker = breaker or CircuitBreaker()
        self._retry = retry or RetryPolicy()
        self._observe = observe  # told of every operation: its name, error and seconds
        self._encoder = msgspec.json.Encoder()
        self._submitted = msgspec.json.Decoder(EngineSubmitted)
        self._status = msgspec.json.Decoder(EngineTaskStatus)
        self._logs = msgspec.json.Decoder(EngineLogs)
        self._line = msgspec.json.Decoder(EngineLogLine)
        self._page = msgspec.json.Decoder(_Page)
        self._load = msgspec.json.Decoder(EngineLoadFigures)
        self.restart_supported: bool | None = None
        self.last_failure = "none"

    # -- the port ----------------------------------------------------------------------------

    async def submit(self, payload: dict[str, Any], idempotency_key: str) -> str:
        body = {**payload, "idempotency_key": idempotency_key}
        raw = await self._call(
            "submit",
            "POST",
            "/engine/task/submit",
            body=body,
            headers={"Idempotency-Key": idempotency_key},
        )
        return str(self._decode(self._submitted, raw, "submit").engine_task_id)

    async def task_status(self, engine_task_id: str) -> EngineTaskStatus:
        raw = await self._call("status", "GET", f"/engine/task/{_seg(engine_task_id)}/status")
        return self._decode(self._status, raw, "status")

    async def agent_logs(
        self, engine_agent_id: str, since: str | None, limit: int | None = None
    ) -> EngineLogPage:
        """The page decoded in one pass when every line keeps the contract; otherwise line by
        line: a line that breaks it (no time, a numeric level, invalid UTF-8, ...) is counted,
        not allowed to reject the page."""
        params = {k: str(v) for k, v in (("since", since), ("limit", limit)) if v is not None}
        raw = await self._call(
            "logs", "GET", f"/engine/agent/{_seg(engine_agent_id)}/logs", params=params
        )
        try:
            return EngineLogPage(list(self._page.decode(raw).logs), len(raw))
        except msgspec.DecodeError:
            pass  # some line breaks the contract, or the answer is malformed: line by line
        entries: list[EngineLogLine | bytes] = []
        for item in self._decode(self._logs, raw, "logs").logs:
            try:
                entries.append(self._line.decode(item))
            except msgspec.DecodeError:
                entries.append(bytes(item))
        return EngineLogPage(entries, len(raw))

    async def update(self, engine_task_id: str, payload: dict[str, Any]) -> None:
        await self._call(
            "update", "PUT", f"/engine/task/{_seg(engine_task_id)}/update", body=payload
        )

    async def stop(self, engine_task_id: str) -> None:
        await self._call("stop", "POST", f"/engine/task/{_seg(engine_task_id)}/stop")

    async def restart_agent(self, engine_agent_id: str) -> None:
        """Not part of 4.1: a 404/405 means this Engine cannot restart agents."""
        try:
            await self._call(
                "restart", "POST", f"/engine/agent/{_seg(engine_agent_id)}/restart", retry=False
            )
        except EngineRejectedError as e:
            if e.status in (404, 405):
                self.restart_supported = False
                raise RestartUnsupportedError(e.status, e.detail) from None
            raise
        self.restart_supported = True

    async def load(self) -> EngineLoadFigures | None:
        """Not part of 4.1: a 404/405 means this Engine offers no load figures."""
        try:
            raw = await self._call("load", "GET", "/engine/load", retry=False)
        except EngineRejectedError as e:
            if e.status in (404, 405):
                return None
            raise
        return self._decode(self._load, raw, "load")

    def circuit_open(self) -> bool:
        return self.breaker.is_open()

    def circuit_state(self) -> str:
        return self.breaker.state

    def failing_since(self) -> str | None:
        return self.breaker.failing_since

    # -- plumbing ----------------------------------------------------------------------------

    def _decode(self, decoder: msgspec.json.Decoder[T], raw: bytes, what: str) -> T:
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as e:  # ValidationError is a DecodeError
            raise EngineProtocolError(
                f"malformed {what} response from the Engine: {e}", utc_now_iso()
            ) from None

    async def _call(self, op: str, method: str, path: str, **options: Any) -> bytes:
        """One operation, all its attempts; timed when an observer is set."""
        if self._observe is None:
            return await self._attempts(method, path, **options)
        started = time.perf_counter()
        try:
            raw = await self._attempts(method, path, **options)
        except EngineError as e:
            self._observe(op, e, time.perf_counter() - started)
            raise
        self._observe(op, None, time.perf_counter() - started)
        return raw

    async def _attempts(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        data = None if body is None else self._encoder.encode(body)
        attempt = 0
        while True:
            if not self.breaker.allow():
                raise EngineUnavailableError(
                    f"{method} {path}: not called, {self.breaker.failures} consecutive failures"
                    f" opened the circuit (last: {self.last_failure})",
                    self.breaker.failing_since or utc_now_iso(),
                )
            try:
                status, raw = await self._once(
                    method, path, data, params, headers, max(0.001, deadline - loop.time())
                )
            except asyncio.CancelledError:
                self.breaker.abandon()  # a cancelled probe must not keep the circuit shut
                raise
            except EngineProtocolError:
                self.breaker.record_success()  # it answered: the Engine is up, the body is bad
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                failure = f"{method} {path}: {type(e).__name__}: {e}".rstrip(": ")
            else:
                if status < 400:
                    self.breaker.record_success()
                    return raw
                if status < 500 and status not in _RETRYABLE_STATUS:
                    self.breaker.record_success()
                    if status == 404 and _names_a_run(path):
                        raise EngineRunNotFoundError(status, _message(raw))
                    raise EngineRejectedError(status, _message(raw))
                failure = f"{method} {path}: the Engine answered {status}: {_message(raw)}"
            self.breaker.record_failure()
            self.last_failure = failure
            attempt += 1
            delay = self._retry.delay(attempt - 1)
            if not retry or attempt >= self._retry.attempts or loop.time() + delay >= deadline:
                log.debug("engine.call_failed", call=f"{method} {path}", attempts=attempt)
                raise EngineUnavailableError(failure, self.breaker.failing_since or utc_now_iso())
            await asyncio.sleep(delay)

    async def _once(
        self,
        method: str,
        path: str,
        data: bytes | None,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        timeout: float,
    ) -> tuple[int, bytes]:
        hdrs = _ACCEPT if data is None else _ACCEPT_JSON_BODY
        if headers:
            hdrs = CIMultiDictProxy(CIMultiDict({**hdrs, **headers}))
        url = self._base_url + path + (f"?{_query(params)}" if params else "")
        async with self._session.request(
            method,
            URL(url, encoded=True),  # quoted here: yarl need not parse and re-quote it
            data=data,
            headers=hdrs,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as r:
            length = r.content_length
            if length is not None and length > self._max_bytes:
                raise self._too_large(method, path)
            if length is not None and r.headers.get("Content-Encoding", "") in _IDENTITY:
                return r.status, await r.read()  # the body cannot outgrow its length
            chunks, size = [], 0
            async for chunk in r.content.iter_chunked(65536):
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large(method, path)
                chunks.append(chunk)
            return r.status, b"".join(chunks)

    def _too_large(self, method: str, path: str) -> EngineProtocolError:
        return EngineProtocolError(
            f"{method} {path}: the Engine's response exceeds {self._max_bytes} bytes",
            utc_now_iso(),
        )


async def reachable(base_url: str, timeout: float) -> str | None:
    """Whether the Engine answers HTTP at all (any status below 500): None when it does, else
    why not. One short-lived connection: for an operator's view, not the hot path."""
    url = base_url.rstrip("/") + "/engine/load"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as r,
        ):
            return None if r.status < 500 else f"the Engine answered {r.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}".rstrip(": ")


def _query(params: dict[str, str]) -> str:
    """A query string, each name and value percent-encoded (RFC 3986): `:` is left as it is
    (allowed in a query), `+` becomes `%2B` (else read as a space), `&`, `=`, `#`, space and
    non-ASCII are escaped."""
    return "&".join(f"{_name(k)}={_value(v)}" for k, v in params.items())


def _name(name: str) -> str:
    return name if name.isascii() and name.isalpha() else quote(name, safe="")


def _value(value: str) -> str:
    """A query value percent-encoded; one with nothing to encode (a timestamp, a number) as
    it is, without `quote`'s work."""
    return value if _PLAIN_QUERY_VALUE.fullmatch(value) else quote(value, safe=":")


def _seg(engine_id: str) -> str:
    """An Engine id as one URL path segment (the ids are untrusted input)."""
    return quote(engine_id, safe="")


def _message(raw: bytes) -> str:
    """The human message of an error body: JSON message/error/detail, else the text."""
    return str(without_nul(_find_message(raw)))


def _find_message(raw: bytes) -> str:
    try:
        body = _error_body.decode(raw)
    except msgspec.DecodeError:
        return raw[:300].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            message = body.get(key)
            if isinstance(message, str):
                return message[:500]
    return str(body)[:300]


def _names_a_run(path: str) -> bool:
    """A 404 on a path naming a run or an agent (not the submit path) means the Engine does not
    know that run; the restart route keeps its own meaning (no restart operation)."""
    named = path.startswith(("/engine/task/", "/engine/agent/"))
    return named and path != "/engine/task/submit" and not path.endswith("/restart")
