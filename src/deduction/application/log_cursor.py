"""Log ingestion from a 4.1 Engine: what a page brings that is not stored, and where to go on.

A 4.1 Engine gives log lines no ids; its `since` may be inclusive or exclusive, compared at
any resolution, and its answers may be cut at a page size it does not announce. The cursor
remembers the newest timestamp stored (`ts`) and the fingerprints of the lines stored at it
(`tail`). It first asks `since = ts`: an inclusive Engine answers with the tail again, an
exclusive one without it, and the cursor records which (`mode`); an exclusive Engine is then
asked 1 µs before `ts`. Answers reaching back before `since` reveal a coarser comparison
(`grain`). Lines before `ts` are dropped, lines at `ts` are matched against the tail by count,
later lines are new. A line without a usable time (broken, or Go's zero time) takes the time
of its neighbours in the answer, so it is neither lost nor stored twice. When whole answers
of stored lines come back twice, more lines share one instant than the Engine will return:
no 4.1 client can read the rest, so the cursor moves past that instant and says so (a gap).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from deduction.application.log_lines import Line, fingerprint, normalise, stored_ts_of
from deduction.application.ports import EngineLogLine, EngineLogPage
from deduction.domain.times import parse_time, rfc3339_short

T = TypeVar("T")
ONE_US = timedelta(microseconds=1)
MIN_PAGE = 5  # an answer this short is never taken for a full page
GRAINS_US = (1_000, 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000)
_EPOCH_YEAR = 1971  # earlier times are unset clocks (Go's zero time, epoch 0), not real times


@dataclass(frozen=True)
class Cursor:
    """Where ingestion of one execution's logs stands; stored in every LogsReceived event."""

    ts: str | None = None
    tail: dict[str, int] = field(default_factory=dict)
    seq: int | None = None
    drained: bool = False
    mode: str | None = None  # the Engine's `since`: "inclusive" or "exclusive", once learnt
    grain: int = 1  # µs: the resolution at which the Engine compares `since`, once learnt
    page: int = 0  # the longest answer seen: the Engine's page size, if it has one
    after: str | None = None  # lines before this instant are past a gap
    stalls: int = 0  # consecutive full answers of stored lines

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Cursor:
        if not raw:
            return cls()
        return cls(raw.get("ts"), dict(raw.get("tail") or {}), raw.get("seq"),
                   bool(raw.get("drained")), raw.get("mode"), int(raw.get("grain") or 1),
                   int(raw.get("page") or 0), raw.get("after"),
                   int(raw.get("stalls") or 0))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "tail": self.tail}
        for name, default in (("seq", None), ("drained", False), ("mode", None), ("grain", 1),
                              ("page", 0), ("after", None), ("stalls", 0)):  # fmt: skip
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        return out

    def since(self) -> str | None:
        """The `since` to ask for next."""
        if self.ts is None:
            return None
        at = parse_time(self.after or self.ts)
        if self.mode == "exclusive":
            try:
                at -= ONE_US
            except OverflowError:
                pass  # nothing is earlier than the first instant there is
        return rfc3339_short(at)


@dataclass
class Ingested:
    """What one answer brought."""

    lines: list[Line]  # new lines, in the Engine's order
    skipped: int  # new lines that could not be read (broken, or no time)
    gap: str | None  # lines no 4.1 read can give, described
    cursor: Cursor
    progressed: bool  # new lines, or something learnt: reading again is worth it
    complete: bool  # nothing new and not a full page: the Engine had nothing more


# An answer's item: (effective time, fingerprint, stored line or None when unreadable, seq)
Item = tuple[str, str, Line | None, int | None]


def ingest(
    cursor: Cursor, page: EngineLogPage, max_lines: int, asked: str | None = None
) -> Ingested:
    """The new lines of one answer to `since = asked` (at most about `max_lines`)."""
    size = len(page.entries)
    full = size >= max(MIN_PAGE, cursor.page)
    cursor = replace(cursor, page=max(cursor.page, size))
    items = _items(cursor, page.entries)
    cursor, discard = _learn(cursor, asked, items)
    if discard:  # a probe of an exclusive Engine may have missed lines at `ts`: read again
        return Ingested([], 0, None, cursor, True, False)
    fresh = _fresh(cursor, items)
    fresh, truncated = _cut(fresh, max_lines)
    if fresh:
        lines = [line for _, _, line, _ in fresh if line is not None]
        return Ingested(lines, len(fresh) - len(lines), None, _advance(cursor, fresh), True,
                        False)  # fmt: skip
    if not full or cursor.ts is None:
        return Ingested([], 0, None, replace(cursor, stalls=0), False, not truncated)
    if cursor.stalls < 1:
        return Ingested([], 0, None, replace(cursor, stalls=cursor.stalls + 1), False, False)
    return _skip(cursor, size)


def _items(cursor: Cursor, entries: list[EngineLogLine | bytes]) -> list[Item]:
    """Each entry with the time it is ordered by: its own, or its neighbours' when it has
    none; never behind the entry before it (the Engine answers in its order)."""
    out: list[tuple[str | None, str, Line | None, int | None]] = []
    for entry in entries:
        if isinstance(entry, bytes):
            out.append((None, _raw_fingerprint(entry), None, None))
            continue
        line = normalise(entry)
        if line is None:
            out.append((None, _raw_fingerprint(repr(entry).encode()), None, None))
            continue
        ts = line["timestamp"] if int(line["timestamp"][:4]) >= _EPOCH_YEAR else None
        out.append((ts, fingerprint(line), line, entry.seq))
    known = [ts for ts, *_ in out if ts is not None]
    running = known[0] if known else (cursor.after or cursor.ts or "0001-01-01T00:00:00.000000Z")
    items: list[Item] = []
    for ts, fp, line, seq in out:
        running = max(running, ts) if ts is not None else running
        items.append((running, fp, line, seq))
    return items


def _raw_fingerprint(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _learn(cursor: Cursor, asked: str | None, items: list[Item]) -> tuple[Cursor, bool]:
    """The Engine's `since` mode and grain, as this answer shows them; True to discard it."""
    if asked is None or cursor.ts is None:
        return cursor, False
    times = [line["timestamp"] for _, _, line, _ in items
             if line is not None and int(line["timestamp"][:4]) >= _EPOCH_YEAR]  # fmt: skip
    if times and min(times) < _normal(asked):
        cursor = replace(cursor, grain=max(cursor.grain, _grain(asked, min(times))))
    if cursor.mode is not None or not cursor.tail or cursor.after or asked != _probe(cursor):
        return cursor, False
    if cursor.ts in times:
        return replace(cursor, mode="inclusive"), False
    if not times or max(times) > cursor.ts:
        return replace(cursor, mode="exclusive"), True
    return cursor, False


def _normal(value: str) -> str:
    """A `since` or gap boundary in the stored form of timestamps (comparable as text)."""
    return stored_ts_of(value)


def _probe(cursor: Cursor) -> str | None:
    return None if cursor.ts is None else cursor.since()


def _grain(asked: str, earliest: str) -> int:
    since_us, first_us = _us(asked), _us(earliest)
    for grain in GRAINS_US:
        if since_us - since_us % grain <= first_us:
            return grain
    return GRAINS_US[-1]


def _us(value: str) -> int:
    at = parse_time(value)
    return (at.toordinal() * 86_400 + at.hour * 3600 + at.minute * 60 + at.second) * 10**6 \
        + at.microsecond  # fmt: skip


def _fresh(cursor: Cursor, items: list[Item]) -> list[Item]:
    tail, seen = Counter(cursor.tail), Counter[str]()
    fresh: list[Item] = []
    for item in items:
        eff, fp = item[0], item[1]
        if cursor.after is not None and eff < _normal(cursor.after):
            continue  # past a gap already recorded
        if cursor.ts is not None and eff < cursor.ts:
            continue  # stored by an earlier read
        if eff == cursor.ts:
            seen[fp] += 1
            if seen[fp] <= tail[fp]:
                continue
        fresh.append(item)
    return fresh


def _cut(fresh: list[Item], max_lines: int) -> tuple[list[Item], bool]:
    """At most ~max_lines, cut only between two times so the cursor covers the rest."""
    if len(fresh) <= max_lines:
        return fresh, False
    cut = max_lines
    while cut < len(fresh) and fresh[cut][0] == fresh[cut - 1][0]:
        cut += 1
    return fresh[:cut], cut < len(fresh)


def _advance(cursor: Cursor, fresh: list[Item]) -> Cursor:
    newest = max(eff for eff, *_ in fresh)
    at_newest = Counter(fp for eff, fp, _, _ in fresh if eff == newest)
    tail = Counter(cursor.tail) + at_newest if newest == cursor.ts else at_newest
    seqs = [seq for *_, seq in fresh if seq is not None]
    after = cursor.after if cursor.after and newest < _normal(cursor.after) else None
    return replace(cursor, ts=newest, tail=dict(tail), seq=seqs[-1] if seqs else cursor.seq,
                   after=after, stalls=0)  # fmt: skip


def _skip(cursor: Cursor, size: int) -> Ingested:
    """Move past the instant (at the Engine's grain) whose lines do not fit in one answer."""
    assert cursor.ts is not None
    ts_us = _us(cursor.ts)
    grain = cursor.grain
    boundary_us = ts_us - ts_us % grain + grain
    boundary = parse_time(cursor.ts) + timedelta(microseconds=boundary_us - ts_us)
    after = rfc3339_short(boundary)
    gap = (f"log lines stamped {cursor.ts} could not be read: the Engine answers at most"
           f" {size} lines for one `since`, and more share that time")  # fmt: skip
    return Ingested([], 0, gap, replace(cursor, after=_normal(after), stalls=0), True, False)


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
