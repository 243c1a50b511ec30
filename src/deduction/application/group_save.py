"""Group commit: saves that arrive together from several threads share one transaction.

The event store serialises inserts with a table lock, and every transaction waits for its
commit to reach the disk; a worker polling a thousand tasks would pay both a thousand times
per cycle. A caller that finds no save under way becomes the leader: it saves what is queued
(its own events and any that arrived meanwhile) in one `save()`; if more arrived meanwhile it
hands the lead to the first of them and returns, so no caller works for others without end.
The others wait for their result, each until its deadline (then SaveTimeoutError, never a
hang). Each caller's events are still saved atomically. A conflict (IntegrityError) in a
shared transaction saves each caller's events on its own, so only the caller that lost the
race sees the conflict and re-applies its findings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError

Save = Callable[..., Sequence[Any]]  # Application.save: events in, recordings out
# Beyond the event store's own bounds (statement and lock timeouts, one retry round), so it
# fires only when the database stopped answering altogether.
WAIT_TIMEOUT = 60.0


class SaveTimeoutError(Exception):
    """A caller's events were not saved within its deadline; `saved` says whether they may
    still be (they were in a transaction under way) or are surely not (still queued)."""

    def __init__(self, message: str, *, maybe_saved: bool) -> None:
        super().__init__(message)
        self.maybe_saved = maybe_saved


class _Entry:
    __slots__ = ("done", "error", "events", "position", "promoted", "wake", "weight")

    def __init__(self, events: list[Any], weight: int) -> None:
        self.events, self.weight = events, weight
        self.done = threading.Event()
        self.wake = threading.Event()  # set when done, or when handed the lead
        self.promoted = False
        self.position = 0
        self.error: BaseException | None = None


class GroupSave:
    """`weigh` sizes a caller's events; a shared transaction holds at most `max_weight` (a
    caller heavier than that is saved on its own) and at most `max_callers` callers."""

    def __init__(self, save: Save, weigh: Callable[[list[Any]], int] = len,
                 max_weight: int = 5000, max_callers: int = 64,
                 wait_timeout: float = WAIT_TIMEOUT) -> None:  # fmt: skip
        self._save, self._weigh = save, weigh
        self._max_weight, self._max_callers = max_weight, max_callers
        self._wait_timeout = wait_timeout
        self._mutex = threading.Lock()
        self._queue: list[_Entry] = []
        self._leading = False
        self.transactions = 0  # for tests and benchmarks

    def __call__(self, events: list[Any]) -> int:
        """Save `events` atomically; the highest notification id they were given."""
        if not events:
            return 0
        entry = _Entry(events, self._weigh(events))
        with self._mutex:
            self._queue.append(entry)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead(entry)
        self._await(entry)
        if entry.error is not None:
            raise entry.error
        return entry.position

    def _await(self, entry: _Entry) -> None:
        deadline = time.monotonic() + self._wait_timeout
        while not entry.done.is_set():
            woken = entry.wake.wait(max(0.0, deadline - time.monotonic()))
            with self._mutex:
                entry.wake.clear()
                lead = entry.promoted and not entry.done.is_set()
                entry.promoted = False
                if not woken and not lead and not entry.done.is_set():
                    self._abandon(entry)
            if lead:
                self._lead(entry)

    def _abandon(self, entry: _Entry) -> None:
        """Past the deadline (mutex held): leave the queue if still in it, and say so."""
        queued = entry in self._queue
        if queued:
            self._queue.remove(entry)
        state = "not saved: still queued" if queued else "a transaction holding them is under way"
        raise SaveTimeoutError(
            f"group save did not finish within {self._wait_timeout}s ({state})",
            maybe_saved=not queued,
        )

    def _lead(self, own: _Entry) -> None:
        """Save batches until `own` is saved; then hand the lead to the next caller, if any."""
        while True:
            with self._mutex:
                if own.done.is_set() and self._queue:
                    successor = self._queue[0]
                    successor.promoted = True
                    successor.wake.set()
                    return
                batch: list[_Entry] = []
                size = 0
                while (
                    self._queue
                    and len(batch) < self._max_callers
                    and (not batch or size + self._queue[0].weight <= self._max_weight)
                ):
                    entry = self._queue.pop(0)
                    batch.append(entry)
                    size += entry.weight
                if not batch:
                    self._leading = False
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Entry]) -> None:
        try:
            recordings = self._save(*(e for entry in batch for e in entry.events))
            self.transactions += 1
        except IntegrityError as error:
            if len(batch) == 1:
                self._finish(batch[0], error=error)
            else:  # one of them lost a race: find out which, on their own
                for entry in batch:
                    self._commit([entry])
            return
        except BaseException as error:  # noqa: BLE001 - handed to every caller of the batch
            for entry in batch:
                self._finish(entry, error=error)
            return
        ids = {id(r.domain_event): r.notification.id for r in recordings}
        for entry in batch:
            self._finish(entry, max((ids.get(id(e), 0) for e in entry.events), default=0))

    @staticmethod
    def _finish(entry: _Entry, position: int = 0, error: BaseException | None = None) -> None:
        entry.position, entry.error = position, error
        entry.done.set()
        entry.wake.set()
