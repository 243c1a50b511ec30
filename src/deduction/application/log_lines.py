"""Engine log lines in their stored shape: timestamps, levels, sizes, fingerprints."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

import msgspec

from deduction.application.ports import EngineLogLine
from deduction.domain.logs import DEFAULT_LEVEL, LEVEL_ALIASES, LEVELS
from deduction.domain.text import (
    MAX_EXTRA_BYTES,
    MAX_LEVEL_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_SOURCE_CHARS,
    NUL,
    without_nul,
)
from deduction.domain.times import parse_time, rfc3339

_canonical = msgspec.json.Encoder(order="sorted")
_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", re.ASCII)

Line = dict[str, Any]


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else _canonical.encode(value).decode()
    text = without_nul(text)
    if len(text) > limit:
        text = f"{text[:limit]}…[{len(text) - limit} more characters]"
    return text


def _extra(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    extra: dict[str, Any] = without_nul(value if isinstance(value, dict) else {"value": value})
    encoded = _canonical.encode(extra)
    if len(encoded) > MAX_EXTRA_BYTES:
        return {"truncated": True, "preview": encoded[:1000].decode("utf-8", "replace")}
    return extra


_SECONDS_KNOWN: set[str] = set()  # "YYYY-MM-DDTHH:MM:SS" already checked (lines share them)


def stored_ts_of(raw: str | float) -> str:
    """The stored form of an Engine timestamp; raises like `parse_time`.

    RFC 3339 UTC with `Z` (`...:SS.fffZ` or `...:SS.ffffffZ`, what most Engines send) is
    checked by `fromisoformat` and re-written by slicing (a whole second once: the lines of
    one second share it); anything else goes the long way.
    """
    if type(raw) is str and len(raw) in (24, 27) and raw[19] == "." and raw[-1] == "Z":
        fraction = raw[20:-1]
        if fraction.isascii() and fraction.isdigit() and _second_known(raw[:19]):
            return raw if len(raw) == 27 else raw[:23] + "000Z"
    return rfc3339(parse_time(raw))


def _second_known(second: str) -> bool:
    if second in _SECONDS_KNOWN:
        return True
    if not _SECOND.fullmatch(second):
        return False
    datetime.fromisoformat(second)  # validates every field (raises ValueError)
    if len(_SECONDS_KNOWN) >= 65_536:
        _SECONDS_KNOWN.clear()
    _SECONDS_KNOWN.add(second)
    return True


def _level(raw: str | None) -> str:
    if raw is not None and raw in LEVELS:
        return raw
    level = without_nul((raw or DEFAULT_LEVEL).strip().upper()) or DEFAULT_LEVEL
    return LEVEL_ALIASES.get(level, level)[:MAX_LEVEL_CHARS]


def _plain_extra(value: Any) -> dict[str, Any] | None:
    """`_extra` for the common case: an object without NUL that fits."""
    if value is None:
        return None
    if type(value) is dict:
        encoded = _canonical.encode(value)
        if len(encoded) <= MAX_EXTRA_BYTES and b"\\u0000" not in encoded:
            return value  # JSON object keys are strings already: nothing to change
    return _extra(value)


def normalise(raw: EngineLogLine) -> Line | None:
    """The stored shape of an Engine line; None when its timestamp cannot be read."""
    try:
        ts = stored_ts_of(raw.timestamp)
    except (ValueError, TypeError, OverflowError, OSError):
        return None
    message, source = raw.message, raw.source
    if type(message) is not str or len(message) > MAX_MESSAGE_CHARS or NUL in message:
        message = _text(message, MAX_MESSAGE_CHARS)
    if source is not None and (type(source) is not str or len(source) > MAX_SOURCE_CHARS
                               or NUL in source):  # fmt: skip
        source = _text(source, MAX_SOURCE_CHARS)[:MAX_SOURCE_CHARS]
    return {
        "timestamp": ts,
        "level": _level(raw.level),
        "message": message,
        "source": source,
        "extra": _plain_extra(raw.extra),
    }


def fingerprint(line: Line) -> str:
    body = _canonical.encode(
        [line["timestamp"], line["level"], line["message"], line["source"], line["extra"]]
    )
    return hashlib.blake2b(body, digest_size=8).hexdigest()
