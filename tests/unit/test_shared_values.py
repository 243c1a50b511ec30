"""The domain's shared values: levels, UTC time forms, NUL scrubbing."""

from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

from deduction.adapters.http.params import Level
from deduction.domain.logs import LEVEL_NAMES, LEVELS
from deduction.domain.text import without_nul
from deduction.domain.times import iso_utc, parse_time, rfc3339, rfc3339_short, utc_now


def test_the_level_parameter_accepts_exactly_the_domain_levels() -> None:
    """The `level` query parameter's literal lists the domain's levels, in severity order."""
    assert get_args(Level) == LEVEL_NAMES
    assert sorted(LEVEL_NAMES, key=LEVELS.__getitem__) == list(LEVEL_NAMES)


def test_times_are_written_in_utc_with_z() -> None:
    """Each form writes UTC with `Z`; only the number of fractional digits differs."""
    paris = timezone(timedelta(hours=1))
    t = datetime(2025, 11, 12, 11, 30, 0, 120000, tzinfo=paris)
    assert iso_utc(t) == "2025-11-12T10:30:00.120000Z"
    assert iso_utc(t.replace(microsecond=0)) == "2025-11-12T10:30:00Z"
    assert rfc3339(t.replace(microsecond=0)) == "2025-11-12T10:30:00.000000Z"
    assert rfc3339_short(t) == "2025-11-12T10:30:00.120Z"
    assert rfc3339_short(t.replace(microsecond=120001)) == "2025-11-12T10:30:00.120001Z"


def test_times_are_read_from_rfc3339_or_epoch() -> None:
    """Naive RFC 3339 means UTC; epoch numbers may be seconds or milliseconds."""
    expected = datetime(2025, 11, 12, 10, 30, tzinfo=UTC)
    assert parse_time("2025-11-12T10:30:00") == expected
    assert parse_time(" 2025-11-12T11:30:00+01:00 ") == expected
    assert parse_time(expected.timestamp()) == expected
    assert parse_time(expected.timestamp() * 1000) == expected
    assert utc_now().tzinfo is UTC


def test_nul_is_replaced_in_strings_keys_and_nested_values() -> None:
    """Every NUL becomes U+FFFD; other values pass unchanged."""
    value = {"a\x00": ["x\x00y", {"k": "\x00"}, 3, None]}
    assert without_nul(value) == {"a\ufffd": ["x\ufffdy", {"k": "\ufffd"}, 3, None]}
    assert without_nul(7) == 7
