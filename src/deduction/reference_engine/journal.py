"""The reference Engine's runs on disk: a journal of every change, replayed at start.

The simulation is deterministic given its knobs and the times of the operations on it, so the
journal holds only those operations (JSON lines, flushed as written). A restarted Engine replays
them at their recorded times and carries on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class Journal:
    """Append-only `runs.jsonl` in a state directory."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "runs.jsonl"
        self._file: IO[bytes] | None = None

    def records(self) -> Iterator[dict[str, Any]]:
        """The recorded operations, oldest first; a torn last line (a crash) is skipped."""
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    yield _decode(raw)
                except msgspec.DecodeError:
                    return

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(_encode(record) + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def replay(records: Iterator[dict[str, Any]], apply: Callable[[dict[str, Any]], None]) -> int:
    """Apply every record in order; how many there were."""
    count = 0
    for record in records:
        apply(record)
        count += 1
    return count
