"""Group commit: callers that arrive together share a save; a conflict is found per caller."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from deduction.application.group_save import GroupSave, SaveTimeoutError


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


def _wait_until(condition: Any) -> None:
    for _ in range(5000):
        if condition():
            return
        threading.Event().wait(0.001)
    raise AssertionError("condition not reached")


def test_a_queued_caller_gives_up_at_its_deadline_and_is_never_saved() -> None:
    gate = threading.Event()
    store = Store(gate)
    group = GroupSave(store.save, wait_timeout=0.2)
    leader = threading.Thread(target=group, args=(["x"],))
    leader.start()
    _wait_until(lambda: group._leading)
    with pytest.raises(SaveTimeoutError, match="not saved: still queued") as caught:
        group(["late"])
    assert caught.value.maybe_saved is False
    gate.set()
    leader.join(5)
    assert store.calls == [["x"]]  # "late" left the queue: nobody saves it afterwards


def test_a_caller_whose_transaction_is_under_way_is_told_it_may_be_saved() -> None:
    first_gate, second_gate = threading.Event(), threading.Event()
    gates = iter([first_gate, second_gate])
    store = Store()
    group = GroupSave(lambda *events: (next(gates).wait(5), store.save(*events))[1],
                      wait_timeout=0.5)  # fmt: skip
    errors: dict[str, SaveTimeoutError] = {}

    def call(name: str) -> None:
        try:
            group([name])
        except SaveTimeoutError as e:
            errors[name] = e

    threads = [threading.Thread(target=call, args=(n,)) for n in ("x", "y", "z")]
    threads[0].start()
    _wait_until(lambda: group._leading)
    for t in threads[1:]:
        t.start()
    _wait_until(lambda: len(group._queue) == 2)
    first_gate.set()  # "y" takes the lead; its save, holding "z" too, waits at the second gate
    threads[2].join(5)
    assert errors["z"].maybe_saved is True
    second_gate.set()
    for t in threads:
        t.join(5)
    assert store.calls == [["x"], ["y", "z"]]  # saved after all, as the error warned


def test_the_leader_returns_once_its_own_events_are_saved_and_hands_over_the_lead() -> None:
    gate = threading.Event()
    store = Store(gate)
    savers: list[str] = []
    group = GroupSave(
        lambda *ev: (savers.append(threading.current_thread().name), store.save(*ev))[1]
    )
    done: list[str] = []

    def call(name: str) -> None:
        group([name])
        done.append(name)

    first = threading.Thread(target=call, args=("first",), name="first")
    first.start()
    _wait_until(lambda: group._leading)
    later = [threading.Thread(target=call, args=(n,), name=n) for n in ("b", "c")]
    for t in later:
        t.start()
    _wait_until(lambda: len(group._queue) == 2)
    store.gate = None  # later saves do not wait
    gate.set()
    for t in (first, *later):
        t.join(5)
    assert sorted(done) == ["b", "c", "first"]
    assert store.calls == [["first"], ["b", "c"]]
    assert savers == ["first", "b"]  # "b" led the second save, not "first"
    assert not group._leading
