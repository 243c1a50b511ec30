"""A client generated from the served OpenAPI document works against the real server."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.support.live import LiveServer, seeded_live_server

TASK = "/api/v1/deduction/task"
CREATE_BODY = ("paths", TASK + "/create", "post", "requestBody", "content", "application/json")


@pytest.fixture(scope="module")
def live_api(server_url: str) -> Iterator[LiveServer]:
    with seeded_live_server(server_url) as server:
        yield server


def generate_models(document: Path, into: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """datamodel-code-generator's models for every schema of the document, imported."""
    target = into / "api_models.py"
    command = [sys.executable, "-m", "datamodel_code_generator", "--input", str(document)]
    command += ["--input-file-type", "openapi", "--output", str(target)]
    command += ["--output-model-type", "pydantic_v2.BaseModel", "--formatters", "black"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    spec = importlib.util.spec_from_file_location("api_models", target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # pydantic resolves the models' forward references through sys.modules.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def plan_example(document: dict[str, Any]) -> dict[str, Any]:
    """The plan's create-task payload, as the document gives it for clients."""
    node: Any = document
    for key in CREATE_BODY:
        node = node[key]
    example: dict[str, Any] = node["schema"]["examples"][0]
    return example


def test_a_generated_client_creates_reads_pages_logs_and_stops_a_task(
    live_api: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models generated from /schema/openapi.json build the plan's create request and read
    every answer of create, detail, log pages and stop."""
    served = requests.get(f"{live_api.base}/schema/openapi.json", timeout=10)
    (tmp_path / "openapi.json").write_bytes(served.content)
    api = generate_models(tmp_path / "openapi.json", tmp_path, monkeypatch)
    base = live_api.base + TASK

    body = api.TaskCreate.model_validate(plan_example(served.json()))
    created = requests.post(f"{base}/create", data=body.model_dump_json(), timeout=10)
    task = api.TaskCreatedResponse.model_validate_json(created.content).data

    detail = api.TaskDetailResponse.model_validate_json(
        requests.get(f"{base}/{task.task_id}", timeout=10).content
    ).data
    assert (detail.name, detail.scheme_id) == (body.name, body.scheme_id)
    assert detail.total_agents == len(body.agent_configs) == 2

    assert read_all_logs(api, base, task.task_id) == []
    assert len(read_all_logs(api, base, live_api.ids["task"])) == 30

    stopped = requests.post(f"{base}/{task.task_id}/stop", timeout=10)
    assert api.TaskStoppedResponse.model_validate_json(stopped.content).data.status.value in {
        "stopping",
        "stopped",
    }


def read_all_logs(api: ModuleType, base: str, task_id: int) -> list[Any]:
    """Every log line of a task, ten a page, following next_cursor."""
    lines: list[Any] = []
    params: dict[str, Any] = {"limit": 10, "order": "asc"}
    while True:
        answer = requests.get(f"{base}/{task_id}/logs", params=params, timeout=10)
        page = api.LogPageResponse.model_validate_json(answer.content).data
        lines += page.logs
        if page.next_cursor is None:
            return lines
        params["after_id"] = page.next_cursor
