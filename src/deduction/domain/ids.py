"""Snowflake-like integer ids (<= 2**53 - 1, sorted by creation) and their UUID mapping."""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

MAX_ID = 2**53 - 1
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_SEQ_BITS = 12
_SEQ_MASK = (1 << _SEQ_BITS) - 1


class IdGenerator:
    """41 bits of milliseconds since 2024 then 12 bits of sequence: 53 bits, JSON-safe.

    The sequence starts at a random offset per process, so two processes that
    draw in the same millisecond rarely collide; a collision is caught by the
    event store's unique key and the command retried.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = int.from_bytes(os.urandom(2), "big") & _SEQ_MASK

    def next_id(self) -> int:
        with self._lock:
            now = max(int(time.time() * 1000) - _EPOCH_MS, self._last_ms)
            if now == self._last_ms:
                self._seq = (self._seq + 1) & _SEQ_MASK
                if self._seq == 0:
                    now += 1
            self._last_ms = now
            return (now << _SEQ_BITS) | self._seq


_default = IdGenerator()


def new_id() -> int:
    return _default.next_id()


def to_uuid(entity_id: int) -> UUID:
    """The aggregate id of a task or execution (reversible)."""
    return UUID(int=entity_id)


def from_uuid(aggregate_id: UUID) -> int:
    return aggregate_id.int
