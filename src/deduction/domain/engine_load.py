"""The load an Engine reports (CPU and memory use), kept as samples: not one event per poll."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


@dataclass(frozen=True)
class SamplePolicy:
    """When a reading is worth an event: every `interval` seconds at most, sooner when a
    figure moves by more than `delta` points or crosses a limit admission holds at."""

    interval: float = 60.0
    delta: float = 10.0
    cpu_limit: float | None = None
    memory_limit: float | None = None

    def over(self, cpu: float | None, memory: float | None) -> bool:
        """The figures are above a limit (a missing figure or limit holds nothing)."""
        return _above(cpu, self.cpu_limit) or _above(memory, self.memory_limit)


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


class EngineLoad(Aggregate):
    """One Engine's last load figures; `None` figures: the Engine offers none (any more)."""

    class Started(Aggregate.Created):
        engine_url: str

    class Sampled(Aggregate.Event):
        cpu_percent: float | None
        memory_percent: float | None
        sampled_at: str

    @staticmethod
    def create_id(engine_url: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"deduction:engine_load:{engine_url}")

    @event(Started)
    def __init__(self, engine_url: str) -> None:
        self.engine_url = engine_url
        self.cpu_percent: float | None = None
        self.memory_percent: float | None = None
        self.sampled_at: str | None = None

    @property
    def has_figures(self) -> bool:
        return self.cpu_percent is not None or self.memory_percent is not None

    def sample(
        self, cpu: float | None, memory: float | None, at: datetime, policy: SamplePolicy
    ) -> bool:
        """Record the reading when the policy says it is news; True when it was recorded."""
        if not self._news(cpu, memory, at, policy):
            return False
        self._sampled(cpu, memory, at.isoformat())
        return True

    def _news(self, cpu: float | None, memory: float | None, at: datetime, p: SamplePolicy) -> bool:
        if cpu is None and memory is None:
            return self.has_figures  # the Engine stopped offering figures: say so once
        if not self.has_figures or self.sampled_at is None:
            return True
        if (at - datetime.fromisoformat(self.sampled_at)).total_seconds() >= p.interval:
            return True
        if p.over(cpu, memory) != p.over(self.cpu_percent, self.memory_percent):
            return True
        return _moved(cpu, self.cpu_percent, p.delta) or _moved(memory, self.memory_percent,
                                                                 p.delta)  # fmt: skip

    @event(Sampled)
    def _sampled(self, cpu_percent: float | None, memory_percent: float | None,
                 sampled_at: str) -> None:  # fmt: skip
        self.cpu_percent, self.memory_percent = cpu_percent, memory_percent
        self.sampled_at = sampled_at


def _moved(new: float | None, old: float | None, delta: float) -> bool:
    if new is None or old is None:
        return new is not old
    return abs(new - old) > delta
