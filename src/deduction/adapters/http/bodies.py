"""Strict decoding of request bodies.

Litestar converts bodies with `strict=False`, so `"5"` would pass for an
integer and `1.0` for an id. The handlers still declare `JSONBody[...]` (for
the OpenAPI document and the first, lenient pass) and then decode the same
bytes again here, strictly, so a wrong type is a 422 rather than a guess.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from deduction.adapters.http.messages import plain, split_msgspec
from deduction.adapters.http.schemas import InputError

S = TypeVar("S")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


class MalformedBodyError(Exception):
    """The body is not JSON at all (400)."""


def decode_strict(raw: bytes, kind: type[S]) -> S:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders.setdefault(kind, msgspec.json.Decoder(kind))
    try:
        return decoder.decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as e:
        field, sentence = plain(*split_msgspec(str(e)))
        raise InputError(field, sentence) from None
    except msgspec.DecodeError as e:
        raise MalformedBodyError(str(e)) from None


async def strict_body(request: Request[Any, Any, Any], kind: type[S]) -> S:
    return decode_strict(await request.body(), kind)
