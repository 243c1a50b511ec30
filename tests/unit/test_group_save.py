"""Group commit: callers that arrive together share a save; a conflict is found per caller."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from deduction.application.group_save import GroupSave


@dataclass
class Note:
    id: int


@dataclass
class Recording:
    domain_event: Any
    notification: Note


class Store:
    """Numbers events like the event store; events named "clash" conflict."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[Any]] = []
        self.next_id = 0
        self.gate = gate

    def save(self, *events: Any) -> list[Recording]:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(list(events))
        if "clash" in events:
            raise IntegrityError("duplicate key")
        out = []
        for e in events:
            self.next_id += 1
            out.append(Recording(e, Note(self.next_id)))
        return out


def test_a_lone_caller_gets_its_highest_notification_id() -> None:
    store = Store()
    group = GroupSave(store.save)
    assert group(["a", "b"]) == 2
    assert group([]) == 0  # nothing to save: no call at all
    assert store.calls == [["a", "b"]]


def test_callers_arriving_during_a_save_share_the_next_one_and_a_conflict_stays_theirs() -> None:
    gate = threading.Event()
    store = Store(gate)
    group = GroupSave(store.save)
    results: dict[str, Any] = {}

    def call(name: str, events: list[Any]) -> None:
        try:
            results[name] = group(events)
        except IntegrityError as e:
            results[name] = e

    first = threading.Thread(target=call, args=("first", ["x"]))
    first.start()
    while not group._leading:  # the first caller leads and waits at the gate
        threading.Event().wait(0.001)
    others = [threading.Thread(target=call, args=(n, ev))
              for n, ev in (("ok", ["p", "q"]), ("lost", ["clash"]), ("late", ["r"]))]  # fmt: skip
    for t in others:
        t.start()
    while len(group._queue) < 3:
        threading.Event().wait(0.001)
    gate.set()
    for t in (first, *others):
        t.join(5)
    assert results["first"] == 1
    assert isinstance(results["lost"], IntegrityError)
    # the three that queued up were tried in one save, then each on its own
    assert store.calls[1] == ["p", "q", "clash", "r"]
    assert store.calls[2:] == [["p", "q"], ["clash"], ["r"]]
    assert results["ok"] == 3 and results["late"] == 4


def test_other_errors_reach_every_caller_of_the_batch() -> None:
    def broken(*events: Any) -> list[Recording]:
        raise OSError("connection lost")

    with pytest.raises(OSError):
        GroupSave(broken)(["a"])
