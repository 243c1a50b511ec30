"""The Engine's load is recorded as samples: news, not one event per reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deduction.domain import EngineLoad
from deduction.domain.engine_load import SamplePolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = SamplePolicy(interval=60, delta=10, cpu_limit=80)


def sampled(load: EngineLoad) -> int:
    return sum(isinstance(e, EngineLoad.Sampled) for e in load.collect_events())


def test_a_steady_load_is_recorded_once_per_interval() -> None:
    load = EngineLoad("http://engine")
    readings = [load.sample(20, 30, T0 + timedelta(seconds=s), POLICY) for s in range(0, 130, 5)]
    assert sampled(load) == 3 and readings.count(True) == 3  # at 0, 60 and 120 s
    assert (load.cpu_percent, load.memory_percent) == (20, 30)


def test_a_move_beyond_the_delta_or_across_a_limit_is_recorded_at_once() -> None:
    load = EngineLoad("http://engine")
    assert load.sample(20, 30, T0, POLICY)
    assert not load.sample(29, 30, T0 + timedelta(seconds=1), POLICY)
    assert load.sample(31, 30, T0 + timedelta(seconds=2), POLICY)  # moved 11 points
    assert load.sample(75, 30, T0 + timedelta(seconds=3), POLICY)
    assert load.sample(81, 30, T0 + timedelta(seconds=4), POLICY)  # crossed the CPU limit
    assert not load.sample(85, 30, T0 + timedelta(seconds=5), POLICY)
    assert load.sample(79, 30, T0 + timedelta(seconds=6), POLICY)  # back under it
    assert load.cpu_percent == 79


def test_an_engine_without_figures_records_nothing_and_a_withdrawal_once() -> None:
    load = EngineLoad("http://engine")
    assert not load.sample(None, None, T0, POLICY)
    assert load.sample(50, 50, T0, POLICY)
    assert load.sample(None, None, T0 + timedelta(seconds=1), POLICY)
    assert not load.sample(None, None, T0 + timedelta(seconds=120), POLICY)
    assert not load.has_figures
