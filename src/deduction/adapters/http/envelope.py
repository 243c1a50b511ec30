"""The response envelope `{code, message, data}` and the wire format of times."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec

T = TypeVar("T")

Timestamp = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={
            "description": "RFC 3339 UTC time with microseconds: 2025-11-12T10:30:00.000000Z",
            "extra": {"format": "date-time"},
        }
    ),
]


class Envelope(msgspec.Struct, Generic[T]):
    """Every response: `code` equals the HTTP status, `data` holds the answer."""

    code: int
    message: str
    data: T


class FieldError(msgspec.Struct):
    field: str
    """Where the problem is: a body path (`agent_configs[0].side`), a parameter or a header."""
    message: str


class ErrorDetail(msgspec.Struct):
    errors: list[FieldError]


class ErrorEnvelope(msgspec.Struct):
    """Every error: `message` says what was wrong; 422 answers list each field in `data`."""

    code: int
    message: str
    data: ErrorDetail | None = None


def ok(data: T, message: str = "success", code: int = 200) -> Envelope[T]:
    return Envelope(code=code, message=message, data=data)
