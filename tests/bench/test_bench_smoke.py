"""Every benchmark runs at its smoke size and gives a well-formed result (no speed is asserted)."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
from bench.common import Result, write_result

FIELDS = {"machine", "versions", "parameters", "baseline", "value", "ratio", "target",
          "target_met"}  # fmt: skip


def check(name: str, tmp_path: Path) -> None:
    module = importlib.import_module(f"bench.{name}")
    result = module.run(smoke=True)
    assert isinstance(result, Result)
    assert result.name == name
    assert result.value > 0 and math.isfinite(result.value)
    assert result.baseline > 0 and math.isfinite(result.baseline)
    assert result.ratio == pytest.approx(result.value / result.baseline)
    assert isinstance(result.target_met, bool)
    assert result.unit and result.baseline_label and result.target
    path = write_result(result, tmp_path)
    assert path == tmp_path / f"{name}.json"
    data = json.loads(path.read_text())
    assert FIELDS <= set(data)
    assert data["name"] == name
    assert data["ratio"] == pytest.approx(round(result.value / result.baseline, 4))
    assert data["machine"]["cores"] and data["versions"]["eventsourcing"]
    assert data["parameters"]


def test_log_ingestion(tmp_path: Path) -> None:
    check("log_ingestion", tmp_path)


def test_poll_capacity(tmp_path: Path) -> None:
    check("poll_capacity", tmp_path)


def test_poll_workers(tmp_path: Path) -> None:
    check("poll_workers", tmp_path)


def test_task_detail_reads(tmp_path: Path) -> None:
    check("task_detail_reads", tmp_path)


def test_metrics_cost(tmp_path: Path) -> None:
    check("metrics_cost", tmp_path)


def test_log_queries(tmp_path: Path) -> None:
    check("log_queries", tmp_path)


def test_commands(tmp_path: Path) -> None:
    check("commands", tmp_path)


def test_projection_rebuild(tmp_path: Path) -> None:
    check("projection_rebuild", tmp_path)


def test_mixed_load(tmp_path: Path) -> None:
    check("mixed_load", tmp_path)


def test_audit_trail(tmp_path: Path) -> None:
    check("audit_trail", tmp_path)


def test_stream_fanout(tmp_path: Path) -> None:
    check("stream_fanout", tmp_path)


def test_worker_rss(tmp_path: Path) -> None:
    check("worker_rss", tmp_path)
