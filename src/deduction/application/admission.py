"""Admission control: which queued tasks may go to the Engine now under the caps, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Caps:
    """ENGINE_MAX_RUNNING_TASKS and ENGINE_MAX_RUNNING_AGENTS (0: no cap), and
    ENGINE_MAX_CPU_PERCENT and ENGINE_MAX_MEMORY_PERCENT (None: not used)."""

    tasks: int = 0
    agents: int = 0
    cpu_percent: float | None = None
    memory_percent: float | None = None

    @property
    def any(self) -> bool:
        return bool(self.tasks or self.agents) or self.by_load

    @property
    def by_load(self) -> bool:
        return self.cpu_percent is not None or self.memory_percent is not None

    def overloaded(self, load: Load | None) -> bool:
        """The Engine's last figures are above a limit; no figures hold nothing."""
        if load is None:
            return False
        return _above(load.cpu_percent, self.cpu_percent) or _above(
            load.memory_percent, self.memory_percent
        )


class Load(Protocol):
    @property
    def cpu_percent(self) -> float | None: ...

    @property
    def memory_percent(self) -> float | None: ...


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


class Candidate(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def agents(self) -> int: ...


def choose(
    heads: Sequence[Candidate], tasks: int, agents: int, caps: Caps, load: Load | None = None
) -> list[int]:
    """The queue's first tasks that fit beside `tasks` and `agents` already holding slots.

    Strictly in queue order: the first task that does not fit stops the walk, so a large
    task is never overtaken for ever by smaller ones. A task with more agents than the
    agents cap fits only when nothing else holds a slot. While the Engine's last load
    figures are above a limit, nothing is admitted.
    """
    chosen: list[int] = []
    if caps.overloaded(load):
        return chosen
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
