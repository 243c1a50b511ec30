"""Loads a catalog file (agent metas, schemes, env instances); entries already present stay."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from deduction.application.service import DeductionApp, DuplicateError, Receipt


def demo_catalog() -> dict[str, Any]:
    catalog: dict[str, Any] = json.loads(
        resources.files("deduction").joinpath("demo_catalog.json").read_text()
    )
    return catalog


def load_catalog(app: DeductionApp, catalog: dict[str, Any], operator: str = "system") -> int:
    """Create the catalog entries that do not exist yet; returns the last position saved."""
    position = 0
    calls: list[tuple[Callable[..., Receipt], tuple[Any, ...]]] = [
        *(
            (app.create_agent_meta, (m["id"], m["name"], m["load"], m.get("description"), operator))
            for m in catalog.get("agent_metas", [])
        ),
        *(
            (app.create_scheme, (s["id"], s["name"], s.get("config", {}), operator))
            for s in catalog.get("schemes", [])
        ),
        *(
            (app.create_env_instance, (e["id"], e["name"], e.get("config", {}), operator))
            for e in catalog.get("env_instances", [])
        ),
    ]
    for fn, args in calls:
        try:
            position = max(position, fn(*args).position)
        except DuplicateError:
            continue
    return position


def read_catalog_file(path: Path) -> dict[str, Any]:
    catalog: dict[str, Any] = json.loads(path.read_text())
    return catalog
