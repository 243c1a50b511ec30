"""Log ingestion from a 4.1 Engine: normalise lines, drop what was stored, advance the cursor.

A 4.1 Engine gives log entries no ids, its `since` may be inclusive or exclusive and
timestamps may collide. The cursor therefore remembers the newest timestamp stored (`ts`)
and a multiset of fingerprints of the lines stored *at* that timestamp (`tail`). We ask
for `since = ts - 1 ms`, so both kinds of Engine return every line at `ts` again; lines
older than `ts` are dropped, lines at `ts` are matched against `tail` by count, newer
lines are new. When the Engine numbers its lines (`seq`, an optional extra), the number
decides instead.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

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
from deduction.domain.times import parse_time, rfc3339, rfc3339_short

SINCE_OVERLAP = timedelta(milliseconds=1)
T = TypeVar("T")
_canonical = msgspec.json.Encoder(order="sorted")

Line = dict[str, Any]


@dataclass(frozen=True)
class Cursor:
    """Where ingestion of one execution's logs stands; stored in every LogsReceived event."""

    ts: str | None = None
    tail: dict[str, int] = field(default_factory=dict)
    seq: int | None = None
    drained: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Cursor:
        if not raw:
            return cls()
        return cls(raw.get("ts"), dict(raw.get("tail") or {}), raw.get("seq"),
                   bool(raw.get("drained")))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "tail": self.tail}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.drained:
            out["drained"] = True
        return out

    def since(self) -> str | None:
        """The `since` to ask for: 1 ms before `ts`, so inclusive and exclusive Engines agree."""
        if self.ts is None:
            return None
        return rfc3339_short(parse_time(self.ts) - SINCE_OVERLAP)


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


def _stored_ts_of(raw: str | float) -> str:
    """The stored form of an Engine timestamp; raises like `parse_time`.

    RFC 3339 UTC with `Z` (`...:SS.fffZ` or `...:SS.ffffffZ`, what most Engines send) is
    checked by `fromisoformat` and re-written by slicing; anything else goes the long way.
    """
    if type(raw) is str and raw[-1:] == "Z" and raw[19:20] == "." and len(raw) in (24, 27) \
            and raw[4] == "-" and raw[7] == "-" and raw[10] == "T" and raw[13] == ":" \
            and raw[16] == ":":  # fmt: skip
        datetime.fromisoformat(raw)  # validates every field (raises ValueError)
        return raw if len(raw) == 27 else raw[:23] + "000Z"
    return rfc3339(parse_time(raw))


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
        ts = _stored_ts_of(raw.timestamp)
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


@dataclass(frozen=True)
class Ingested:
    lines: list[Line]  # new lines, oldest first
    seqs: list[int | None]  # the Engine's sequence number of each new line, when it gives one
    unreadable: int  # lines skipped because their timestamp could not be read
    truncated: bool  # more new lines were returned than one poll stores


def ingest(cursor: Cursor, raw_lines: list[EngineLogLine], max_lines: int) -> Ingested:
    """The lines not stored yet, in timestamp order (at most about `max_lines`)."""
    pairs = [(normalise(r), r.seq) for r in raw_lines]
    readable = [(line, seq) for line, seq in pairs if line is not None]
    unreadable = len(pairs) - len(readable)
    numbered = bool(readable) and all(seq is not None for _, seq in readable)
    fresh: list[tuple[Line, int | None]]
    if numbered and (cursor.ts is None or cursor.seq is not None):
        last = cursor.seq if cursor.seq is not None else -(2**63)
        after = sorted(
            ((line, s) for line, s in readable if s is not None and s > last), key=lambda p: p[1]
        )
        truncated = len(after) > max_lines
        fresh = [*after[:max_lines]]
    else:
        fresh = [(line, None) for line in _new_by_timestamp(cursor, [x for x, _ in readable])]
        fresh, truncated = _cut(fresh, max_lines)
    return Ingested([x for x, _ in fresh], [s for _, s in fresh], unreadable, truncated)


def _new_by_timestamp(cursor: Cursor, lines: list[Line]) -> list[Line]:
    lines = sorted(lines, key=lambda line: line["timestamp"])  # stable: keeps the Engine's order
    tail, seen_at_ts = Counter(cursor.tail), Counter[str]()
    fresh: list[Line] = []
    for line in lines:
        if cursor.ts is not None and line["timestamp"] < cursor.ts:
            continue  # stored by an earlier poll (or too late to tell: 4.1 has no ids)
        if line["timestamp"] == cursor.ts:
            fp = fingerprint(line)
            seen_at_ts[fp] += 1
            if seen_at_ts[fp] <= tail[fp]:
                continue
        fresh.append(line)
    return fresh


def _cut(
    fresh: list[tuple[Line, int | None]], max_lines: int
) -> tuple[list[tuple[Line, int | None]], bool]:
    """At most ~max_lines, cut only between two timestamps so the cursor covers the rest."""
    if len(fresh) <= max_lines:
        return fresh, False
    cut = max_lines
    while cut < len(fresh) and fresh[cut][0]["timestamp"] == fresh[cut - 1][0]["timestamp"]:
        cut += 1
    return fresh[:cut], cut < len(fresh)


def advance(cursor: Cursor, lines: list[Line], seqs: list[int | None]) -> Cursor:
    """The cursor after storing `lines` (new lines from `ingest`, in its order)."""
    if not lines:
        return cursor
    numbered = [s for s in seqs if s is not None]
    seq = max(numbered) if numbered else cursor.seq
    newest = max(line["timestamp"] for line in lines)
    if cursor.ts is not None and cursor.ts > newest:
        return Cursor(cursor.ts, cursor.tail, seq, cursor.drained)  # numbered late lines
    at_newest = Counter(fingerprint(x) for x in lines if x["timestamp"] == newest)
    tail = Counter(cursor.tail) + at_newest if newest == cursor.ts else at_newest
    if numbered:
        tail = Counter()  # the sequence decides; no need to carry fingerprints
    return Cursor(newest, dict(tail), seq, cursor.drained)


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
