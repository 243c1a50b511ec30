"""Strict decoding of request bodies.

Litestar converts bodies with `strict=False`, so `"5"` would pass for an
integer and `1.0` for an id. The handlers still declare `JSONBody[...]` (for
the OpenAPI document and the first, lenient pass) and then decode the same
bytes again here, strictly, so a wrong type is a 422 rather than a guess. The one
leniency is JSON Schema's own: a whole number written with a fraction (`5.0`) is an
integer where the document says integer.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi
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
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as e:
        raise MalformedBodyError(str(e)) from None
    try:  # only when the fast path failed: read whole floats as integers, then check again
        value = _whole(msgspec.json.decode(raw), msgspec.inspect.type_info(kind))
        return msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as e:
        field, sentence = plain(*split_msgspec(str(e)))
        raise InputError(field, sentence) from None


def _whole(value: Any, kind: mi.Type) -> Any:
    """`value` with each whole float that stands where `kind` has an integer made an int."""
    if isinstance(kind, mi.Metadata):
        return _whole(value, kind.type)
    if isinstance(value, float) and value.is_integer() and _has_int(kind):
        return int(value)
    if isinstance(kind, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in kind.fields}
        return {k: _whole(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(kind, mi.ListType) and isinstance(value, list):
        return [_whole(item, kind.item_type) for item in value]
    if isinstance(kind, mi.UnionType):
        structs = [t for t in kind.types if isinstance(t, (mi.StructType, mi.ListType))]
        return _whole(value, structs[0]) if len(structs) == 1 else value
    return value


def _has_int(kind: mi.Type) -> bool:
    if isinstance(kind, mi.UnionType):
        return any(_has_int(t) for t in kind.types)
    return isinstance(kind, mi.IntType)


async def strict_body(request: Request[Any, Any, Any], kind: type[S]) -> S:
    return decode_strict(await request.body(), kind)
