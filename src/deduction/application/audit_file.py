"""The audit export: JSON Lines of a task's events with their chain digests, then a manifest;
and its verification with no database."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from deduction.application.audit import AuditEvent, StoredRecord, read_event
from deduction.application.audit_chain import digest

FORMAT = "deduction-audit-export/1"
_encoder = msgspec.json.Encoder()


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def event_json(e: AuditEvent) -> dict[str, Any]:
    """An event as the API and the export show it."""
    return {
        "position": e.position, "aggregate_type": e.aggregate_type,
        "aggregate_id": str(e.aggregate_id), "version": e.version, "type": e.type,
        "timestamp": rfc3339(e.timestamp), "operator": e.operator,
        "schema_version": e.schema_version, "fields": e.fields,
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChainedRecord:
    """A stored event with the chain digest before it and its own."""

    record: StoredRecord
    previous: bytes
    digest: bytes


class Exporter:
    """Turns chained records into export lines, then the manifest line."""

    def __init__(self, task_id: int, chain_head: tuple[int, bytes]) -> None:
        self.task_id, self.chain_head = task_id, chain_head
        self._all = hashlib.sha256()
        self._count, self._types = 0, dict[str, int]()
        self._first: int | None = None
        self._last: int | None = None

    def line(self, chained: ChainedRecord) -> bytes:
        r = chained.record
        event = read_event(r)
        self._all.update(chained.digest)
        self._count += 1
        self._types[event.type] = self._types.get(event.type, 0) + 1
        self._first = r.position if self._first is None else self._first
        self._last = r.position
        out = event_json(event) | {
            "topic": r.topic, "state": base64.b64encode(r.state).decode(),
            "previous": chained.previous.hex(), "digest": chained.digest.hex(),
        }  # fmt: skip
        return _encoder.encode(out) + b"\n"

    def manifest(self) -> bytes:
        position, head = self.chain_head
        body = {
            "format": FORMAT, "task_id": self.task_id, "events": self._count,
            "by_type": self._types, "first_position": self._first,
            "last_position": self._last, "events_digest": self._all.hexdigest(),
            "chain_head": {"position": position, "digest": head.hex()},
            "exported_at": rfc3339(datetime.now(UTC)),
        }  # fmt: skip
        return _encoder.encode({"manifest": body}) + b"\n"


@dataclass
class FileVerdict:
    events: int = 0
    problem: str | None = None
    manifest: dict[str, Any] | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify_file(lines: Iterable[bytes]) -> FileVerdict:
    """Each event's digest recomputed from its stored form, its readable fields compared with
    that stored form, positions rising, and the manifest's count and digest matched."""
    verdict, all_digests, last = FileVerdict(), hashlib.sha256(), 0
    for number, raw in enumerate(_nonblank(lines), start=1):
        if verdict.manifest is not None:
            return _bad(verdict, f"line {number}: data after the manifest")
        try:
            item = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return _bad(verdict, f"line {number}: not JSON")
        if isinstance(item, dict) and "manifest" in item:
            verdict.manifest = item["manifest"]
            continue
        problem = _check_line(item, last)
        if problem is not None:
            return _bad(verdict, f"line {number}: {problem}")
        all_digests.update(bytes.fromhex(item["digest"]))
        last = item["position"]
        verdict.events += 1
    return _check_manifest(verdict, all_digests.hexdigest())


def _nonblank(lines: Iterable[bytes]) -> Iterator[bytes]:
    return (line for line in lines if line.strip())


def _bad(verdict: FileVerdict, problem: str) -> FileVerdict:
    verdict.problem = problem
    return verdict


def _check_line(item: Any, last: int) -> str | None:
    try:
        record = StoredRecord(int(item["position"]), UUID(item["aggregate_id"]),
                              int(item["version"]), item["topic"],
                              base64.b64decode(item["state"], validate=True))  # fmt: skip
        previous, recorded = bytes.fromhex(item["previous"]), bytes.fromhex(item["digest"])
    except (KeyError, TypeError, ValueError) as e:
        return f"not an exported event ({e})"
    p = record.position
    if p <= last:
        return f"position {p} is not after {last} (reordered)"
    if digest(previous, p, record.originator_id, record.version, record.topic,
              record.state) != recorded:  # fmt: skip
        return f"position {p}: the stored form does not match its digest (edited)"
    shown = {k: v for k, v in item.items() if k not in ("topic", "state", "previous", "digest")}
    if shown != event_json(read_event(record)):
        return f"position {p}: the readable fields differ from the stored form (edited)"
    return None


def _check_manifest(verdict: FileVerdict, events_digest: str) -> FileVerdict:
    m = verdict.manifest
    if m is None:
        return _bad(verdict, "no manifest: the file is cut short")
    if m.get("format") != FORMAT:
        return _bad(verdict, f"unknown format {m.get('format')!r}")
    if m.get("events") != verdict.events:
        return _bad(verdict, f"the manifest counts {m.get('events')} events, the file holds"
                    f" {verdict.events} (lines deleted or inserted)")  # fmt: skip
    if m.get("events_digest") != events_digest:
        return _bad(verdict, "the manifest's events_digest does not match the events")
    return verdict
