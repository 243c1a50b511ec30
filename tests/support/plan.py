"""The plan's example task (section 3.1.1) and catalog, as an HTTP body and as a command."""

from __future__ import annotations

import copy
from typing import Any

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.service import AgentConfig, DeductionApp, NewTask

PLAN_TASK: dict[str, Any] = {
    "name": "task_20251112_001",
    "description": "红蓝对抗演练任务",
    "scheme_id": 1234567890,
    "env_instance_id": 9876543210,
    "agent_configs": [
        {
            "agent_meta_id": 10001,
            "side": "red",
            "params": {"attack_strategy": "aggressive", "target": "192.168.1.100"},
        },
        {"agent_meta_id": 10002, "side": "blue", "params": {"defense_level": "high"}},
    ],
}


def plan_task(**changes: Any) -> dict[str, Any]:
    """The create request body, with top-level fields changed."""
    body = copy.deepcopy(PLAN_TASK)
    body.update(changes)
    return body


def new_task(
    name: str = PLAN_TASK["name"],
    params: list[dict[str, Any]] | None = None,
    max_retry: int = 3,
) -> NewTask:
    """The create command; `params` gives one agent each, alternating the plan's two agents."""
    agents = PLAN_TASK["agent_configs"]
    params = params or [copy.deepcopy(a["params"]) for a in agents]
    return NewTask(
        name=name,
        description=PLAN_TASK["description"],
        scheme_id=PLAN_TASK["scheme_id"],
        env_instance_id=PLAN_TASK["env_instance_id"],
        agent_configs=[
            AgentConfig(agents[i % 2]["agent_meta_id"], agents[i % 2]["side"], p, max_retry)
            for i, p in enumerate(params)
        ],
    )


def seed_catalog(app: DeductionApp) -> int:
    """The demo catalog (agents 10001/10002, scheme, env); returns the last position saved."""
    return load_catalog(app, demo_catalog())


def create_task(app: DeductionApp, new: NewTask | None = None) -> int:
    """Seed the catalog and create the task (the plan's by default); returns its id."""
    seed_catalog(app)
    return int(app.create_task(new or new_task(), "tester").data["task_id"])
