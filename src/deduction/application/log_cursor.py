"""Log ingestion from a 4.1 Engine: what a page brings that is not stored, and where to go on.

A 4.1 Engine gives log lines no ids; its `since` may be inclusive or exclusive, compared at
any resolution, and its answers may be cut at a page size it does not announce. The cursor
remembers the newest timestamp stored (`ts`) and the fingerprints of the lines stored at it
(`tail`). It first asks `since = ts`: an inclusive Engine answers with the tail again, an
exclusive one without it, and the cursor records which (`mode`); an exclusive Engine is then
asked 1 µs before `ts`. Answers reaching back before `since` reveal a coarser comparison
(`grain`). Lines before `ts` are dropped, lines at `ts` are matched against the tail by count,
later lines are new. A line without a usable time (broken, or Go's zero time) is ordered at the
time of the line before it in the answer (before all stored lines when it opens the answer), so
it is neither lost nor stored twice.
When full answers of stored lines come back twice, more lines share one instant (at the
Engine's grain) than it will return: no 4.1 client can read the rest, so the cursor moves past
that instant and says so (a gap, of exact size when the Engine numbers its lines).
"""

from __future__ import annotations

import functools
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
_EPOCH_YEAR = "1971"  # earlier times are unset clocks (Go's zero time, epoch 0), not real times
_FIRST = "0001-01-01T00:00:00.000000Z"


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
    capped: bool = False  # a read from the start came back `page` long: the Engine cuts there
    probing: bool = False  # the next read is from the start, to tell a cut from the end
    count: int = 0  # entries taken so far (stored or skipped)
    after: str | None = None  # lines before this instant are past a gap
    stalls: int = 0  # consecutive full answers of stored lines
    gap_seq: int | None = None  # the last number stored before an open gap
    unnumbered: int = 0  # broken lines taken after the numbered line `seq`: numbered too
    gap_attempt: int = 0  # the agent's attempt when the open gap began
    gap_start: str | None = None  # an open gap (recorded once reading goes on past it):
    gap_end: str | None = None  # lines stamped from gap_start to before gap_end
    gap_read: int = 0  # broken lines read past the open gap before a numbered one
    stamped: str | None = None  # the newest time a stored line carried itself (lines
    # without one are ordered after it, at `ts` when a gap's end moved `ts` past it)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Cursor:
        if not raw:
            return cls()
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["tail"] = dict(known.get("tail") or {})
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "tail": self.tail}
        for name, default in (("seq", None), ("drained", False), ("mode", None), ("grain", 1),
                              ("page", 0), ("capped", False), ("probing", False),
                              ("count", 0), ("after", None), ("stalls", 0), ("gap_seq", None),
                              ("unnumbered", 0), ("gap_attempt", 0), ("gap_start", None),
                              ("gap_end", None), ("gap_read", 0), ("stamped", None)):  # fmt: skip
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        return out

    def since(self) -> str | None:
        """The `since` to ask for next."""
        if self.ts is None or self.probing:
            return None
        return _since(self.ts, self.after, self.mode, self.grain)


@functools.lru_cache(maxsize=8192)
def _since(ts: str, after: str | None, mode: str | None, grain: int) -> str:
    """`Cursor.since` of a cursor at `ts`: the same few cursors ask it at every read and
    poll, so its answer is kept (parsing and formatting a time cost more than the lookup)."""
    if after is not None:  # past a gap: an exclusive Engine cutting `since` to its grain is
        at = parse_time(after)  # asked the boundary itself
        coarse = grain > 1
    else:
        at, coarse = parse_time(ts), False
    if mode == "exclusive" and not coarse:
        try:
            at -= ONE_US
        except OverflowError:
            pass  # nothing is earlier than the first instant there is
    return rfc3339_short(at)


@dataclass(frozen=True)
class Gap:
    """Lines the Engine holds that no read under 4.1 can give."""

    start: str  # stored lines end at this instant...
    end: str  # ...and reading goes on from this one
    lines: int | None  # how many, when the Engine's numbering tells; else unknown
    page: int  # the most lines the Engine returns for one `since`

    def describe(self) -> str:
        many = "an unknown number (maybe none) of" if self.lines is None else str(self.lines)
        return (f"{many} log lines stamped from {self.start} to before {self.end} could not be"
                f" read: the Engine answers at most {self.page} lines for one `since`, and more"
                " share that time")  # fmt: skip


@dataclass
class Ingested:
    """What one answer brought."""

    lines: list[Line]  # new lines, oldest first
    skipped: int  # new lines that could not be read (broken, or no time)
    gap: Gap | None  # lines no 4.1 read can give
    cursor: Cursor
    progressed: bool  # new lines, or something learnt: reading again is worth it
    complete: bool  # nothing new and not a full page: the Engine had nothing more


# An answer's item: (effective time, fingerprint, stored line or None when unreadable, seq).
# A readable line's fingerprint is taken only when it is compared (`_fp`): at the cursor's
# time and at the newest time read, a few lines of an answer; None until then.
Item = tuple[str, str | None, Line | None, int | None]


def ingest(
    cursor: Cursor,
    page: EngineLogPage,
    max_lines: int,
    asked: str | None = None,
    ended: bool = False,
    attempt: int = 0,
) -> Ingested:
    """The new lines of one answer to `since = asked` (at most about `max_lines`); `ended`
    says the agent has ended, so the Engine holds every line it will have; `attempt` changes
    whenever the agent may have been restarted (an Engine may number lines per attempt)."""
    got = _ingest(cursor, page, max_lines, asked, ended, attempt)
    if got.complete and got.gap is None and got.cursor.gap_start is not None:
        # The reading may end here (an ended agent is not read again), and no numbered line
        # followed the gap to say its size: it is recorded now, of unknown size.
        return replace(got, gap=_open_gap(got.cursor, None), cursor=_closed(got.cursor))
    return got


def _ingest(
    cursor: Cursor,
    page: EngineLogPage,
    max_lines: int,
    asked: str | None,
    ended: bool,
    attempt: int,
) -> Ingested:
    size = len(page.entries)
    items = _items(cursor, page.entries)
    cursor, discard = _learn(cursor, asked, items)
    if discard:  # a probe of an exclusive Engine may have missed lines at `ts`: read again
        return Ingested([], 0, None, cursor, True, False)
    fresh, truncated = _cut(sorted(_fresh(cursor, items), key=lambda item: item[0]), max_lines)
    full = size >= max(MIN_PAGE, cursor.page)
    if cursor.probing:
        cursor, verdict = _probed(cursor, size, ended)
        if verdict is not None and not fresh:
            return Ingested([], 0, None, cursor, False, verdict)
    if fresh:
        short = size < cursor.page and not truncated  # shorter than a page: nothing cut off
        cursor = _with(cursor, page=max(cursor.page, size))
        lines = [line for _, _, line, _ in fresh if line is not None]
        skipped = len(fresh) - len(lines)
        cursor, gap = _close_gap(cursor, fresh, attempt)
        return Ingested(lines, skipped, gap, _advance(cursor, fresh), not short, short)
    cursor = _with(cursor, page=max(cursor.page, size))
    if not full or cursor.ts is None:
        return _nothing_new(cursor, not truncated)
    if cursor.stalls < 1:
        return Ingested([], 0, None, _with(cursor, stalls=cursor.stalls + 1), False, False)
    if not cursor.capped:  # a full answer twice: read from the start, which a cut keeps short
        return Ingested([], 0, None, _with(cursor, probing=True), True, False)
    return _skip(cursor, attempt)


def _probed(cursor: Cursor, size: int, ended: bool) -> tuple[Cursor, bool | None]:
    """What a read from the start shows: fewer lines than are stored is a cut (the page
    size); more than any answer before is no cut (complete); as many leaves it open, and is
    taken for a cut once the agent has ended. None: go on to skip the full instant."""
    cursor = _with(cursor, probing=False)
    if size < cursor.count or (size == cursor.count == cursor.page and ended):
        return _with(cursor, capped=True, page=size), None
    if size > cursor.page:
        return _with(cursor, page=size, stalls=0), True
    return _with(cursor, stalls=0), False


def _nothing_new(cursor: Cursor, done: bool) -> Ingested:
    if done and cursor.gap_start is not None:  # no numbered line followed
        return Ingested([], 0, _open_gap(cursor, None), _closed(cursor), True, False)
    return Ingested([], 0, None, _with(cursor, stalls=0), False, done)


def _open_gap(cursor: Cursor, lines: int | None) -> Gap:
    assert cursor.gap_start is not None and cursor.gap_end is not None
    return Gap(cursor.gap_start, cursor.gap_end, lines, cursor.page)


def _closed(cursor: Cursor) -> Cursor:
    return _with(cursor, stalls=0, gap_seq=None, gap_start=None, gap_end=None, gap_read=0)


def _items(cursor: Cursor, entries: list[EngineLogLine | bytes]) -> list[Item]:
    """Each entry with the time it is ordered by: its own, or for one without a usable time
    the time of the entry before it in the answer. One that opens an answer is ordered
    before everything stored: the Engine's cut fell between it and a line stored before it,
    so an earlier answer held it too (from the first read on, which opens at the same
    lines). Only past a gap can it be new: when the answer does not reach back before the
    gap's end and the line is not one stored at the cursor's time, it is ordered at the
    gap's end."""
    decoded = [(entry, None if isinstance(entry, bytes) else normalise(entry))
               for entry in entries]  # fmt: skip
    after = None if cursor.after is None else stored_ts_of(cursor.after)
    past_gap = False
    if after is not None:
        first = next((line["timestamp"] for _, line in decoded
                      if line is not None and _timed_line(line)), None)  # fmt: skip
        past_gap = first is None or first >= after
    opening, tail = True, Counter(cursor.tail) if past_gap else None
    previous = _FIRST
    items: list[Item] = []
    for entry, line in decoded:
        if line is not None and _timed_line(line):
            opening, previous = False, line["timestamp"]
        fp: str | None = None
        if isinstance(entry, bytes):
            fp = _raw_fingerprint(entry)
        elif line is None:
            fp = _raw_fingerprint(repr(entry).encode())
        at = previous
        if opening and tail is not None and after is not None:
            fp = fp or fingerprint(line)  # type: ignore[arg-type]
            if tail[fp] > 0 and cursor.ts != after:
                tail[fp] -= 1  # stored at the cursor's time, before the gap
            else:
                at = after
        seq = None if line is None or isinstance(entry, bytes) else entry.seq
        items.append((at, fp, line, seq))
    return items


def _timed_line(line: Line) -> bool:
    return bool(line["timestamp"] >= _EPOCH_YEAR)  # stored times open with a 4-digit year


def _fp(item: Item) -> str:
    fp, line = item[1], item[2]
    return fp if fp is not None else fingerprint(line)  # type: ignore[arg-type]


def _raw_fingerprint(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _timed(items: list[Item]) -> list[str]:
    return [line["timestamp"] for _, _, line, _ in items if line is not None and _timed_line(line)]


def _learn(cursor: Cursor, asked: str | None, items: list[Item]) -> tuple[Cursor, bool]:
    """The Engine's `since` mode and grain, as this answer shows them; True to discard it."""
    if asked is None or cursor.ts is None:
        return cursor, False
    times = _timed(items)
    if times and min(times) < stored_ts_of(asked):
        cursor = _with(cursor, grain=max(cursor.grain, _grain(asked, min(times))))
    ts = cursor.ts
    if (
        ts is None
        or cursor.mode is not None
        or not cursor.tail
        or cursor.after
        or asked != cursor.since()
    ):
        return cursor, False
    if ts in times:
        return _with(cursor, mode="inclusive"), False
    if not times or max(times) > ts:
        return _with(cursor, mode="exclusive"), True
    return cursor, False


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
    tail, seen, ts = cursor.tail, dict[str, int](), cursor.ts
    after = None if cursor.after is None else stored_ts_of(cursor.after)
    fresh: list[Item] = []
    for item in items:
        eff = item[0]
        if after is not None and eff < after:
            continue  # past a gap already recorded
        if ts is not None and eff < ts:
            continue  # stored by an earlier read
        if eff == ts:
            fp = _fp(item)
            seen[fp] = count = seen.get(fp, 0) + 1
            if count <= tail.get(fp, 0):
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


def _close_gap(cursor: Cursor, fresh: list[Item], attempt: int) -> tuple[Cursor, Gap | None]:
    """Reading goes on past an open gap: it is recorded. When the Engine numbers its lines,
    the jump in numbering says how many lines it held (once a numbered line is read)."""
    if cursor.gap_start is None:
        return cursor, None
    if cursor.gap_seq is None:
        return _closed(cursor), _open_gap(cursor, None)
    first = next((i for i, item in enumerate(fresh) if item[3] is not None), None)
    if first is None:
        return _with(cursor, gap_read=cursor.gap_read + len(fresh)), None
    seq = fresh[first][3]
    assert seq is not None
    hidden = seq - cursor.gap_seq - 1 - first - cursor.gap_read  # unnumbered lines were read
    if seq <= cursor.gap_seq or attempt != cursor.gap_attempt or attempt > 0:
        # the numbering may have restarted: the agent was restarted, maybe inside the gap
        return _closed(cursor), _open_gap(cursor, None)
    return _closed(cursor), _open_gap(cursor, hidden) if hidden > 0 else None


def _advance(cursor: Cursor, fresh: list[Item]) -> Cursor:
    newest = max(item[0] for item in fresh)
    at_newest: Counter[str] = Counter()
    last_seq, broken = None, 0  # the last number read, and the broken lines read after it
    for item in fresh:
        eff, _, line, seq = item
        if eff == newest:
            at_newest[_fp(item)] += 1
        if seq is not None:
            last_seq, broken = seq, 0
        elif line is None:
            broken += 1
    # lines read at a gap's end without a time of their own follow those stored before it
    past_gap = cursor.after is not None and newest == stored_ts_of(cursor.after)
    tail = Counter(cursor.tail) + at_newest if newest == cursor.ts or past_gap else at_newest
    unnumbered = broken if last_seq is not None else cursor.unnumbered + broken
    # `ts` at a gap's end is no line's time: lines without one opening an answer are still
    # placed past the gap, and told from those stored there by the tail
    after = cursor.after if cursor.after and newest <= stored_ts_of(cursor.after) else None
    stamped = max(_timed(fresh), default=cursor.stamped)
    return _with(cursor, ts=newest, tail=dict(tail),
                 seq=last_seq if last_seq is not None else cursor.seq, after=after, stalls=0,
                 count=cursor.count + len(fresh), unnumbered=unnumbered,
                 stamped=stamped)  # fmt: skip


def _skip(cursor: Cursor, attempt: int) -> Ingested:
    """Move past the instant (at the Engine's grain) whose lines do not fit in one answer.
    Skipped again with nothing read since (the answers hold only lines without a time, which
    give no instant to go on from), the distance doubles. The gap stays open until reading
    goes on past it, so it is recorded once, with its whole extent."""
    assert cursor.ts is not None
    ts_us, grain = _us(cursor.ts), cursor.grain
    step = grain - ts_us % grain
    if cursor.after is not None:
        step = max(step, 2 * (_us(cursor.after) - ts_us))
    after = stored_ts_of(rfc3339_short(parse_time(cursor.ts) + timedelta(microseconds=step)))
    end = after
    if cursor.grain > 1:  # the boundary instant itself is lost if the Engine is exclusive,
        end = stored_ts_of(rfc3339_short(parse_time(after) + ONE_US))  # which no read shows
    moved = _with(cursor, after=after, stalls=0, gap_end=end)
    if cursor.gap_start is not None:
        return Ingested([], 0, None, moved, True, False)
    start = cursor.stamped or cursor.ts  # lines without a time stored since are in it too
    moved = _with(moved, gap_start=min(start, cursor.ts), gap_attempt=attempt, gap_read=0)
    if cursor.seq is not None:  # the numbering of the next line read gives the exact size
        moved = _with(moved, gap_seq=cursor.seq + cursor.unnumbered)  # broken ones were read
    return Ingested([], 0, None, moved, True, False)


def _with(cursor: Cursor, **changes: Any) -> Cursor:
    """`dataclasses.replace` for a Cursor, without its per-call field introspection (a
    poll makes a few per agent and read)."""
    new = object.__new__(Cursor)
    new.__dict__.update(cursor.__dict__, **changes)
    return new


def batches(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
