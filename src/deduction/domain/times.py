"""Time in UTC: now, and the RFC 3339 `Z` forms the events, the API and the Engine use."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with `Z`; fractional digits only when the time has microseconds."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rfc3339(value: datetime) -> str:
    """UTC, always six fractional digits and `Z`, so every stored and served time has one shape."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def rfc3339_short(value: datetime) -> str:
    """UTC with `Z`: three fractional digits when they suffice, else six."""
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def parse_time(value: str | float) -> datetime:
    """RFC 3339 (naive means UTC) or epoch seconds/milliseconds; raises ValueError."""
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    parsed = datetime.fromisoformat(value.strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def utc_now_iso() -> str:
    """Now, as `iso_utc` writes it (when a run of Engine failures began)."""
    return iso_utc(utc_now())
