"""Log ingestion without ids: every emitted line is stored exactly once, whatever `since` means."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from deduction.application.log_cursor import Cursor, ingest, normalise
from deduction.domain.times import parse_time
from deduction.application.ports import EngineLogLine, EngineLogPage

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


def test_unreadable_timestamps_are_counted_not_stored() -> None:
    got = ingest(Cursor(), [EngineLogLine(timestamp="?"), EngineLogLine(timestamp=0)], 100)
    assert (len(got.lines), got.unreadable) == (1, 1)


def test_a_poll_is_cut_between_two_timestamps_only() -> None:
    lines = [EngineLogLine(timestamp=f"2025-01-01T00:00:0{i // 3}Z", message=str(i))
             for i in range(9)]  # fmt: skip
    got = ingest(Cursor(), lines, 4)
    assert len(got.lines) == 6 and got.truncated  # the second instant's three lines stay together
    cursor = advance(Cursor(), got.lines, got.seqs)
    assert cursor.ts == "2025-01-01T00:00:01.000000Z" and sum(cursor.tail.values()) == 3
    rest = ingest(cursor, lines, 4)
    assert [x["message"] for x in rest.lines] == ["6", "7", "8"] and not rest.truncated
