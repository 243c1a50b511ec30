"""Admission control: which queued tasks may go to the Engine now (caps, load), in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Caps:
    """ENGINE_MAX_RUNNING_TASKS / _AGENTS (0: no cap), ENGINE_MAX_CPU/MEMORY_PERCENT (0: ignore)."""

    tasks: int = 0
    agents: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.tasks or self.agents or self.cpu_percent or self.memory_percent)


@dataclass(frozen=True)
class EngineLoad:
    """The Engine's own load figures, when it offers them (an optional endpoint)."""

    cpu_percent: float | None = None
    memory_percent: float | None = None
    running_tasks: int | None = None
    running_agents: int | None = None


class Candidate(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def agents(self) -> int: ...


def load_hold(caps: Caps, load: EngineLoad | None) -> str | None:
    """Why admissions are held by the Engine's load, or None. No figures: no hold."""
    if load is None:
        return None
    if caps.cpu_percent and load.cpu_percent is not None and load.cpu_percent > caps.cpu_percent:
        return f"the Engine reports {load.cpu_percent:.0f}% CPU (limit {caps.cpu_percent:.0f}%)"
    memory = load.memory_percent
    if caps.memory_percent and memory is not None and memory > caps.memory_percent:
        return f"the Engine reports {memory:.0f}% memory (limit {caps.memory_percent:.0f}%)"
    return None


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
