"""The admission rule: the queue's first tasks that fit under the caps, strictly in order."""

from __future__ import annotations

from typing import NamedTuple

from deduction.application.admission import Caps, choose, free_slots


class Head(NamedTuple):
    id: int
    agents: int


def test_tasks_are_admitted_in_queue_order_up_to_the_tasks_cap() -> None:
    heads = [Head(3, 1), Head(1, 1), Head(2, 1)]
    assert choose(heads, tasks=0, agents=0, caps=Caps(tasks=2)) == [3, 1]
    assert choose(heads, tasks=1, agents=1, caps=Caps(tasks=2)) == [3]
    assert choose(heads, tasks=2, agents=2, caps=Caps(tasks=2)) == []


def test_a_task_that_does_not_fit_the_agents_cap_stops_the_walk() -> None:
    heads = [Head(1, 2), Head(2, 3), Head(3, 1)]
    assert choose(heads, tasks=0, agents=0, caps=Caps(agents=4)) == [1]


def test_a_task_larger_than_the_agents_cap_goes_alone() -> None:
    heads = [Head(1, 9), Head(2, 1)]
    assert choose(heads, tasks=0, agents=0, caps=Caps(agents=4)) == [1]
    assert choose(heads, tasks=1, agents=1, caps=Caps(agents=4)) == []


def test_without_caps_everything_is_admitted() -> None:
    heads = [Head(i, 5) for i in range(10)]
    assert choose(heads, tasks=50, agents=500, caps=Caps()) == list(range(10))
    assert not Caps().any
    assert free_slots(3, Caps(tasks=5), queued=10) == 2
    assert free_slots(7, Caps(tasks=5), queued=10) == 0
    assert free_slots(7, Caps(), queued=10) == 10


class Figures(NamedTuple):
    cpu_percent: float | None
    memory_percent: float | None


def test_nothing_is_admitted_while_the_engine_reports_a_load_above_a_limit() -> None:
    heads, caps = [Head(1, 1), Head(2, 1)], Caps(tasks=5, cpu_percent=80, memory_percent=90)
    assert choose(heads, 0, 0, caps, Figures(81, 10)) == []
    assert choose(heads, 0, 0, caps, Figures(10, 95)) == []
    assert choose(heads, 0, 0, caps, Figures(80, 90)) == [1, 2]


def test_without_load_figures_the_caps_alone_decide() -> None:
    heads, caps = [Head(1, 1), Head(2, 1)], Caps(tasks=1, cpu_percent=50)
    assert choose(heads, 0, 0, caps, None) == [1]
    assert choose(heads, 0, 0, caps, Figures(None, None)) == [1]
    assert choose(heads, 0, 0, Caps(tasks=1), Figures(99, 99)) == [1]  # no limit set
