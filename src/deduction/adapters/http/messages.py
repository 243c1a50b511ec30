"""Turns msgspec's validation messages into plain sentences that name the field."""

from __future__ import annotations

import re

from deduction.adapters.http.schemas import NO_CONTROL, NO_NUL, OPERATOR
from deduction.domain.ids import MAX_ID
from deduction.domain.logs import LEVELS
from deduction.domain.status import STATUSES

ENUMS: dict[str, tuple[str, ...]] = {
    "status": STATUSES,
    "level": tuple(LEVELS),
    "order": ("desc", "asc"),
}
RANGES: dict[str, tuple[int, int]] = {
    "page": (1, MAX_ID),
    "size": (1, 100),
    "limit": (1, 1000),
    "max_retry": (0, 100),
}
PATTERNS: dict[str, str] = {
    NO_CONTROL: "must not be blank or contain control characters",
    NO_NUL: "must not contain NUL characters (\\u0000)",
    OPERATOR: "must be 1 to 64 printable ASCII characters",
}
HEADERS = {"operator": "X-Operator", "x_operator": "X-Operator"}
WHOLE_RULES = {"X-Operator": "must be 1 to 64 printable ASCII characters"}
"""Fields whose constraints are best said in one sentence, whichever one failed."""
_TYPES = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
    "datetime": "an RFC 3339 time",
}
_RFC3339_HINT = "must be an RFC 3339 time with a timezone, e.g. 2025-11-12T10:00:00Z"


def _kind(spec: str) -> str:
    return " or ".join(_TYPES.get(part.strip(), part.strip()) for part in spec.split("|"))


def _leaf(field: str) -> str:
    return re.split(r"[.\[]", field)[-1] if field else ""


def _bounds(field: str) -> tuple[int, int] | None:
    leaf = _leaf(field)
    if leaf == "id" or leaf.endswith("_id"):
        return (1, MAX_ID)
    return RANGES.get(leaf)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def plain(field: str, raw: str) -> tuple[str, str]:
    """(field, sentence) for one msgspec message about `field` ("" is the whole body)."""
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", raw):
        name = _join(field, m[1])
        return name, f"{name} is not a known field"
    if m := re.fullmatch(r"Object missing required field `(.+)`", raw):
        name = _join(field, m[1])
        return name, f"{name} is required"
    if field in WHOLE_RULES and not raw.startswith("Expected `str`, got"):
        return field, f"{field} {WHOLE_RULES[field]}"
    return field, f"{field or 'request body'} {_constraint(field, raw)}"


def _constraint(field: str, raw: str) -> str:
    if m := re.fullmatch(r"Expected `(.+?)`, got `(.+?)`", raw):
        if m[1] == "datetime":
            return _RFC3339_HINT
        return f"must be {_kind(m[1])}, not {_kind(m[2])}"
    if m := re.fullmatch(r"Expected `(int|float)` ([<>]=?) (\S+)", raw):
        bounds = _bounds(field)
        if bounds:
            return f"must be between {bounds[0]} and {bounds[1]}"
        word = "at least" if m[2].startswith(">") else "at most"
        return f"must be {word} {m[3]}"
    if m := re.fullmatch(r"Expected `(str|array|object)` of length ([<>]=) (\d+)", raw):
        unit = {"str": "characters", "array": "items", "object": "keys"}[m[1]]
        if m[2] == ">=" and m[3] == "1":
            return "must not be empty"
        word = "at least" if m[2] == ">=" else "at most"
        return f"must have {word} {m[3]} {unit}"
    if m := re.fullmatch(r"Expected `str` matching regex '(.*)'", raw):
        pattern = m[1].encode().decode("unicode_escape")
        return PATTERNS.get(pattern, f"must match {m[1]}")
    if m := re.fullmatch(r"Invalid enum value (.*)", raw):
        allowed = ENUMS.get(_leaf(field))
        if allowed:
            return f"must be one of {', '.join(allowed)}, not {m[1]}"
        return f"has an unknown value {m[1]}"
    if "datetime" in raw.lower():
        return _RFC3339_HINT
    if raw == "Number out of range":
        return "is a number out of range"
    return f"is invalid: {raw}"


def from_litestar(key: str, source: str | None, raw: str) -> tuple[str, str]:
    """Normalise a Litestar ValidationException entry: body keys lose `data`, headers get names."""
    if source == "body":
        field = "" if key == "data" else key
    elif source == "header":
        field = HEADERS.get(key, key)
    else:
        field = key
    return plain(field, raw)


def split_msgspec(message: str) -> tuple[str, str]:
    """ "Expected `int`, got `str` - at `$.a[0].b`" -> ("a[0].b", "Expected `int`, got `str`")."""
    raw, sep, where = message.rpartition(" - at `$")
    if not sep:
        return "", message
    return where.rstrip("`").lstrip("."), raw
