"""Exception handlers: every failure becomes an envelope whose `code` is the HTTP status."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import psycopg
import structlog
from eventsourcing import persistence as es
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from psycopg_pool import PoolTimeout

from deduction.adapters.http.bodies import MalformedBodyError
from deduction.adapters.http.envelope import ErrorDetail, ErrorEnvelope, FieldError
from deduction.adapters.http.messages import from_litestar
from deduction.adapters.http.schemas import InputError
from deduction.application.service import (
    CommandError,
    DuplicateError,
    IdempotencyKeyReusedError,
    NotFoundError,
    UnknownReferenceError,
)
from deduction.application.services import ReadModelLagError, ServiceBusyError
from deduction.domain.errors import DomainError

log = structlog.get_logger(__name__)
AnyRequest = Request[Any, Any, Any]

DESCRIPTIONS = {
    400: "The request is malformed: the body is missing or not JSON",
    404: "No such task, execution, catalog entry or endpoint",
    409: "Illegal in the current state, or the id/name is taken",
    401: "No valid credentials: no bearer token, or one that is unknown, expired or revoked",
    403: "The caller's role does not allow this; the message names the role needed",
    413: "The body is larger than MAX_BODY_BYTES",
    429: "Too many requests from this principal; Retry-After says when to retry",
    422: "A field, parameter or header is invalid, or names an entry that does not exist;"
    " data.errors names each one",
    503: "The database is unavailable or the read tables lag behind",
}


def documented(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers an operation can give (400 replaces Litestar's own)."""
    return {
        code: ResponseSpec(
            data_container=ErrorEnvelope, description=DESCRIPTIONS[code], generate_examples=False
        )
        for code in sorted({400, *codes})
    }


def error(
    code: int,
    message: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorEnvelope]:
    detail = ErrorDetail(errors) if errors else None
    return Response(ErrorEnvelope(code, message, detail), status_code=code, headers=headers)


def _invalid(errors: list[FieldError]) -> Response[ErrorEnvelope]:
    return error(422, "; ".join(e.message for e in errors), errors)


def on_validation(request: AnyRequest, exc: ValidationException) -> Response[ErrorEnvelope]:
    entries = exc.extra if isinstance(exc.extra, list) else []
    errors: list[FieldError] = []
    for entry in entries:
        key, source, raw = entry.get("key", ""), entry.get("source"), entry.get("message", "")
        if source == "body" and key == "data" and raw == "'data'":
            return error(400, "request body is missing: send a JSON object")
        errors.append(FieldError(*from_litestar(key, source, raw)))
    if not errors:
        errors.append(FieldError("", exc.detail))
    return _invalid(errors)


def on_input(request: AnyRequest, exc: InputError) -> Response[ErrorEnvelope]:
    return _invalid([FieldError(exc.field, exc.message)])


def on_unknown_reference(
    request: AnyRequest, exc: UnknownReferenceError
) -> Response[ErrorEnvelope]:
    return _invalid([FieldError(exc.field, str(exc))])


def on_key_reused(request: AnyRequest, exc: IdempotencyKeyReusedError) -> Response[ErrorEnvelope]:
    return _invalid([FieldError(exc.field, str(exc))])


def on_duplicate(request: AnyRequest, exc: DuplicateError) -> Response[ErrorEnvelope]:
    if exc.kind == "task":
        return error(409, str(exc))
    return error(409, f"{exc.kind.replace('_', ' ')} {exc.key} already exists")


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def on_http(request: AnyRequest, exc: HTTPException) -> Response[ErrorEnvelope]:
    code = exc.status_code
    if code == 413:
        limit = request.app.state.services.settings.max_body_bytes
        message = f"request body is larger than the limit of {limit} bytes"
    elif isinstance(exc, NotFoundException) and exc.detail == HTTPStatus.NOT_FOUND.phrase:
        message = f"no endpoint at {request.method} {request.url.path}"
    elif isinstance(exc, MethodNotAllowedException):
        raw = (exc.headers or {}).get("allow", "")
        allowed = ", ".join(sorted(m.strip() for m in raw.split(",") if m.strip()))
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        return error(code, message, headers={"Allow": allowed})
    elif code == 429:
        return _too_many(request, exc)
    elif code == 400 and request.method in _BODY_METHODS:
        # the only plain 400 the framework raises on a request with a body: it did not decode
        message = f"request body is not valid JSON: {exc.detail}"
    else:
        message = exc.detail
    return error(code, message, headers=exc.headers)


def _too_many(request: AnyRequest, exc: HTTPException) -> Response[ErrorEnvelope]:
    headers = dict(exc.headers or {})
    wait = max(1, int(headers.get("RateLimit-Reset", "60")))
    limit = headers.get("RateLimit-Limit", "?")
    kind = "commands" if request.method in _BODY_METHODS else "reads"
    who = getattr(request.scope.get("user"), "name", "this caller")
    headers["Retry-After"] = str(wait)
    message = f"rate limit: {who} may send {limit} {kind} per minute; retry after {wait} s"
    return error(429, message, headers=headers)


def on_malformed(request: AnyRequest, exc: MalformedBodyError) -> Response[ErrorEnvelope]:
    return error(400, f"request body is not valid JSON: {exc}")


def on_not_utf8(request: AnyRequest, exc: UnicodeDecodeError) -> Response[ErrorEnvelope]:
    # raised by Litestar's JSON decoding of the body, before any handler runs
    log.warning("http.body_not_utf8", method=request.method, path=request.url.path)
    return error(
        400, f"request body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
    )


def on_too_deep(request: AnyRequest, exc: RecursionError) -> Response[ErrorEnvelope]:
    # msgspec raises this while parsing absurdly nested JSON, before any handler runs
    return error(400, "request body is nested too deeply")


def on_unavailable(request: AnyRequest, exc: Exception) -> Response[ErrorEnvelope]:
    log.warning("http.database_unavailable", path=request.url.path, error=str(exc))
    return error(503, "the database is unavailable; retry later")


def on_conflict(request: AnyRequest, exc: Exception) -> Response[ErrorEnvelope]:
    return error(409, "the task was changed by another request at the same time; retry")


def on_lag(request: AnyRequest, exc: ReadModelLagError) -> Response[ErrorEnvelope]:
    return error(503, f"the change was saved but is not readable yet; read again shortly ({exc})")


def on_unexpected(request: AnyRequest, exc: Exception) -> Response[ErrorEnvelope]:
    log.exception("http.unexpected_error", method=request.method, path=request.url.path)
    return error(500, "internal error; it has been logged")


def _status(code: int) -> Callable[[AnyRequest, Exception], Response[ErrorEnvelope]]:
    def handler(request: AnyRequest, exc: Exception) -> Response[ErrorEnvelope]:
        return error(code, str(exc))

    return handler


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: on_validation,
    HTTPException: on_http,
    InputError: on_input,
    MalformedBodyError: on_malformed,
    RecursionError: on_too_deep,
    UnicodeDecodeError: on_not_utf8,
    UnknownReferenceError: on_unknown_reference,
    IdempotencyKeyReusedError: on_key_reused,
    NotFoundError: _status(404),
    DuplicateError: on_duplicate,
    DomainError: _status(409),
    CommandError: _status(409),
    ReadModelLagError: on_lag,
    ServiceBusyError: _status(503),
    psycopg.OperationalError: on_unavailable,
    es.OperationalError: on_unavailable,
    es.InterfaceError: on_unavailable,
    es.IntegrityError: on_conflict,
    PoolTimeout: on_unavailable,
    Exception: on_unexpected,
}
