"""The hash chain over stored events, and finding the first place a record departs from it."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

GENESIS = bytes(32)  # the "previous digest" of the first event
_HEAD = struct.Struct(">qq16sI")  # position, version, originator id, topic length


def digest(previous: bytes, position: int, originator_id: UUID, version: int, topic: str,
           state: bytes) -> bytes:  # fmt: skip
    """SHA-256 over the previous digest and the event's stored form:
    previous (32) | position (int64 BE) | version (int64 BE) | originator id (16) |
    topic length (uint32 BE) | topic (UTF-8) | state (the stored bytes)."""
    topic_bytes = topic.encode()
    h = hashlib.sha256(previous)
    h.update(_HEAD.pack(position, version, originator_id.bytes, len(topic_bytes)))
    h.update(topic_bytes)
    h.update(state)
    return h.digest()


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """What the chain recorded of the event at a position."""

    position: int
    originator_id: UUID
    version: int
    digest: bytes
    previous: bytes | None = None  # the digest before it; None: the one computed so far


@dataclass(frozen=True, slots=True)
class Slot:
    """One position as verification sees it: the event there now and the chain's record of it."""

    position: int
    event: tuple[UUID, int, str, bytes] | None  # originator id, version, topic, state
    entry: ChainEntry | None


@dataclass(frozen=True)
class Finding:
    """The first place the record departs from the chain."""

    position: int
    kind: str  # edited | deleted | inserted | reordered | checkpoint
    message: str


@dataclass
class Verdict:
    checked: int = 0
    head_position: int = 0
    head_digest: bytes = GENESIS
    unchained: int = 0  # events newer than the chain's head, not chained yet
    finding: Finding | None = None

    @property
    def intact(self) -> bool:
        return self.finding is None


Locate = Callable[[UUID, int], int | None]


def verify(slots: Iterable[Slot], locate: Locate, chain_head: int,
           start: bytes = GENESIS) -> Verdict:  # fmt: skip
    """Walk the slots by position, recomputing each digest; stop at the first departure.

    `locate` says where the chain recorded an event (to tell a reorder from an edit);
    `chain_head` is the newest chained position (newer events are only counted)."""
    verdict, running = Verdict(head_digest=start), start
    for slot in slots:
        if slot.position > chain_head:
            verdict.unchained += slot.event is not None
            continue
        previous = running if slot.entry is None or slot.entry.previous is None \
            else slot.entry.previous  # fmt: skip
        finding = _check(slot, previous, locate)
        if finding is not None:
            verdict.finding = finding
            return verdict
        assert slot.entry is not None  # _check found no insertion
        running = slot.entry.digest
        verdict.checked += 1
        verdict.head_position, verdict.head_digest = slot.position, running
    return verdict


def _check(slot: Slot, previous: bytes, locate: Locate) -> Finding | None:
    p, event, entry = slot.position, slot.event, slot.entry
    if event is None:
        assert entry is not None
        return Finding(p, "deleted", f"position {p}: the event chained here"
                       f" ({entry.originator_id} v{entry.version}) is missing")  # fmt: skip
    oid, version, topic, state = event
    if entry is None:
        where = locate(oid, version)
        if where is not None:
            return Finding(p, "reordered", f"position {p}: holds {oid} v{version},"
                           f" which was chained at position {where}")  # fmt: skip
        return Finding(p, "inserted", f"position {p}: {oid} v{version} was never chained")
    if (oid, version) != (entry.originator_id, entry.version):
        where = locate(oid, version)
        at = f"chained at position {where}" if where is not None else "never chained"
        return Finding(p, "reordered", f"position {p}: holds {oid} v{version} ({at}) where"
                       f" {entry.originator_id} v{entry.version} was chained")  # fmt: skip
    if digest(previous, p, oid, version, topic, state) != entry.digest:
        return Finding(p, "edited", f"position {p}: {oid} v{version} differs from what was"
                       " chained (its stored form or the chain entry was changed)")  # fmt: skip
    return None


def check_checkpoint(verdict: Verdict, position: int, expected: bytes) -> Verdict:
    """The verdict of a walk up to `position`, compared with a checkpoint taken there."""
    if verdict.finding is not None:
        return verdict
    if verdict.head_position != position or verdict.head_digest != expected:
        verdict.finding = Finding(position, "checkpoint",
                                  f"the record up to position {position} differs from the"
                                  f" checkpoint (recomputed {verdict.head_digest.hex()} at"
                                  f" position {verdict.head_position})")  # fmt: skip
    return verdict


def parse_checkpoint(text: str) -> tuple[int, bytes]:
    """ "POSITION:DIGEST_HEX" as `deduction audit checkpoint` prints it."""
    position, _, hexdigest = text.strip().partition(":")
    try:
        value = bytes.fromhex(hexdigest)
        pos = int(position)
    except ValueError:
        value, pos = b"", -1
    if len(value) != 32 or pos < 0:
        raise ValueError("a checkpoint is POSITION:DIGEST (64 hex digits)")
    return pos, value
