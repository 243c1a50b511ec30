"""Admission control: which queued tasks may go to the Engine now under the caps, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Caps:
    """ENGINE_MAX_RUNNING_TASKS and ENGINE_MAX_RUNNING_AGENTS (0: no cap)."""

    tasks: int = 0
    agents: int = 0

    @property
    def any(self) -> bool:
        return bool(self.tasks or self.agents)


class Candidate(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def agents(self) -> int: ...


def choose(heads: Sequence[Candidate], tasks: int, agents: int, caps: Caps) -> list[int]:
    """The queue's first tasks that fit beside `tasks` and `agents` already holding slots.

    Strictly in queue order: the first task that does not fit stops the walk, so a large
    task is never overtaken for ever by smaller ones. A task with more agents than the
    agents cap fits only when nothing else holds a slot.
    """
    chosen: list[int] = []
    for head in heads:
        if caps.tasks and tasks >= caps.tasks:
            break
        if caps.agents and agents + head.agents > caps.agents and tasks > 0:
            break
        chosen.append(head.id)
        tasks, agents = tasks + 1, agents + head.agents
    return chosen


def free_slots(tasks: int, caps: Caps, queued: int) -> int:
    """How many queued tasks may be looked at for admission now (the tasks cap alone)."""
    return max(0, caps.tasks - tasks) if caps.tasks else queued
