"""Log ingestion without ids: every emitted line is stored exactly once, whatever `since` means."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from deduction.application.log_cursor import Cursor, ingest, normalise
from deduction.application.ports import EngineLogLine, EngineLogPage
from deduction.domain.times import parse_time

T0 = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)

# One step of the world: the Engine emits some lines (each 0, 1 or 1000 ms after the previous
# one, or at the same instant), or we poll, storing at most `cap` new lines.
gap_and_message = st.tuples(st.sampled_from([0, 0, 1, 1000]), st.sampled_from(["a", "b"]))
emit = st.tuples(st.just("emit"), st.lists(gap_and_message, max_size=6))
poll = st.tuples(st.just("poll"), st.sampled_from([2, 5, 10_000]))


def _engine_answer(
    emitted: list[EngineLogLine], since: str | None, inclusive: bool
) -> list[EngineLogLine]:
    if since is None:
        return list(emitted)
    s = parse_time(since)
    return [
        x
        for x in emitted
        if parse_time(x.timestamp) > s or (inclusive and parse_time(x.timestamp) == s)
    ]


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.one_of(emit, poll), max_size=40), inclusive=st.booleans(),
       numbered=st.booleans())  # fmt: skip
def test_stored_lines_equal_emitted_lines(
    steps: list[tuple[str, object]], inclusive: bool, numbered: bool
) -> None:
    emitted: list[EngineLogLine] = []
    stored: list[dict[str, object]] = []
    cursor, t = Cursor(), T0

    def poll_once(cap: int) -> bool:
        nonlocal cursor
        since = cursor.since()
        answer = EngineLogPage(list(_engine_answer(emitted, since, inclusive)))
        got = ingest(cursor, answer, cap, since)
        cursor = got.cursor
        stored.extend(got.lines)
        return got.progressed

    for kind, arg in steps:
        if kind == "emit":
            for gap_ms, message in arg:  # type: ignore[union-attr]
                t += timedelta(milliseconds=gap_ms)
                emitted.append(EngineLogLine(timestamp=t.isoformat(), level="info",
                                             message=message,
                                             seq=len(emitted) if numbered else None))  # fmt: skip
        else:
            poll_once(arg)  # type: ignore[arg-type]
    while poll_once(5):
        pass
    assert Counter((x["timestamp"], x["message"]) for x in stored) == Counter(
        (normalise(x)["timestamp"], x.message)
        for x in emitted  # type: ignore[index]
    )
    assert sum(cursor.tail.values()) <= len(emitted)


def test_since_is_the_newest_stored_time_or_just_before_it_for_an_exclusive_engine() -> None:
    assert Cursor().since() is None
    assert Cursor(ts="2025-11-12T10:00:00.000000Z").since() == "2025-11-12T10:00:00.000Z"
    exclusive = Cursor(ts="2025-11-12T10:00:00.000000Z", mode="exclusive")
    assert exclusive.since() == "2025-11-12T09:59:59.999999Z"


def test_lines_are_normalised_to_the_stored_shape() -> None:
    line = normalise(EngineLogLine(
        timestamp="2025-11-12T18:30:00.5+08:00", level=" warn ", message={"k": "v"},
        source="s" * 100, extra=["x\x00y"],
    ))  # fmt: skip
    assert line == {
        "timestamp": "2025-11-12T10:30:00.500000Z",
        "level": "WARNING",
        "message": '{"k":"v"}',
        "source": "s" * 64,
        "extra": {"value": ["x\ufffdy"]},
    }
    assert normalise(EngineLogLine(timestamp=1762943400))["timestamp"] == (  # type: ignore[index]
        "2025-11-12T10:30:00.000000Z"
    )
    naive = normalise(EngineLogLine(timestamp="2025-11-12 10:30:00", level=None))
    assert naive is not None and naive["level"] == "INFO"
    assert normalise(EngineLogLine(timestamp="yesterday")) is None
    huge = normalise(EngineLogLine(timestamp=0, message="m\x00" * 50_000))
    assert huge is not None and len(huge["message"]) < 66_000 and "\x00" not in huge["message"]
    assert huge["message"].endswith("more characters]")


def test_unreadable_lines_are_counted_and_unset_clocks_stored() -> None:
    page = EngineLogPage([EngineLogLine(timestamp="?"), EngineLogLine(timestamp=0), b"\xff"])
    got = ingest(Cursor(), page, 100)
    assert (len(got.lines), got.skipped) == (1, 2)
    assert got.lines[0]["timestamp"] == "1970-01-01T00:00:00.000000Z"


def test_a_poll_is_cut_between_two_timestamps_only() -> None:
    lines = [EngineLogLine(timestamp=f"2025-01-01T00:00:0{i // 3}Z", message=str(i))
             for i in range(9)]  # fmt: skip
    got = ingest(Cursor(), EngineLogPage(list(lines)), 4)
    assert len(got.lines) == 6 and not got.complete  # the second instant's lines stay together
    assert got.cursor.ts == "2025-01-01T00:00:01.000000Z" and sum(got.cursor.tail.values()) == 3
    rest = ingest(got.cursor, EngineLogPage(list(lines)), 4)
    assert [x["message"] for x in rest.lines] == ["6", "7", "8"]


def test_an_answer_out_of_time_order_is_stored_once() -> None:
    lines = [EngineLogLine(timestamp=f"2025-01-01T00:00:0{i % 3}Z", message=str(i))
             for i in (5, 0, 4, 1, 3, 2)]  # fmt: skip
    got = ingest(Cursor(), EngineLogPage(list(lines)), 100)
    assert sorted(x["message"] for x in got.lines) == ["0", "1", "2", "3", "4", "5"]
    again = ingest(got.cursor, EngineLogPage(list(reversed(lines))), 100, got.cursor.since())
    assert again.lines == [] and again.gap is None


def test_a_line_without_a_time_first_in_an_answer_is_not_stored_twice() -> None:
    """An exclusive Engine's answer may open with an unset-clock line stored before."""
    a = EngineLogLine(timestamp="2025-01-01T00:00:00.001Z", message="a")
    z = EngineLogLine(timestamp="0001-01-01T00:00:00Z", message="z")
    b = EngineLogLine(timestamp="2025-01-01T00:00:00.002Z", message="b")
    first = ingest(Cursor(), EngineLogPage([a, z]), 100)
    assert [x["message"] for x in first.lines] == ["a", "z"]
    since = first.cursor.since()
    second = ingest(first.cursor, EngineLogPage([z, b]), 100, since)  # exclusive: `a` is gone
    third = ingest(second.cursor, EngineLogPage([z, b]), 100, second.cursor.since())
    assert [x["message"] for x in second.lines + third.lines] == ["b"]


def test_full_pages_of_stored_lines_at_one_instant_become_a_gap_of_known_size() -> None:
    """Numbered lines: the jump in numbers after the over-full instant is the gap's size."""
    at = "2025-01-01T00:00:00.005Z"
    burst = [EngineLogLine(timestamp=at, message=f"w{i}", seq=i) for i in range(30)]
    later = [EngineLogLine(timestamp="2025-01-01T00:00:01Z", message="x", seq=30)]

    def engine(since: str | None) -> EngineLogPage:
        lines = [x for x in burst + later if since is None or str(x.timestamp) >= since[:23]]
        return EngineLogPage(list(lines[:10]))  # an unannounced cap of 10

    cursor, stored, gaps = Cursor(), [], []
    for _ in range(12):
        since = cursor.since()
        got = ingest(cursor, engine(since), 100, since, ended=True)
        cursor, stored, gaps = got.cursor, stored + got.lines, gaps + [got.gap] * bool(got.gap)
    assert len(stored) == 11 and stored[-1]["message"] == "x"
    assert [(g.lines, g.start) for g in gaps] == [(20, "2025-01-01T00:00:00.005000Z")]
