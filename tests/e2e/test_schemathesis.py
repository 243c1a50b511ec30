"""Property-based API test: generated requests against the app's own OpenAPI schema.

The server runs in its own thread and event loop (schemathesis calls it
synchronously) over a fresh database holding the plan's catalog, a task with
log lines, and a stopped task, so generated requests meet real rows too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from uuid import uuid4

import hypothesis
import pytest
import requests
import schemathesis
import uvicorn
from schemathesis.config import SchemathesisConfig

from deduction.adapters.http.app import create_app, openapi_document
from deduction.adapters.postgres import create_database, drop_database, with_database
from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.service import AgentConfig, NewTask
from deduction.application.services import Services
from deduction.bootstrap import open_services
from deduction.domain import ExecutionLog
from tests.support.api import free_port, settings_for
from tests.support.logs import log_lines

SEED = 20251112
# Every check schemathesis has, with its default expectations (as `--checks all`).
CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": 25, "deterministic": True},
    "phases": {"stateful": {"enabled": True, "max-steps": 12}},
    "operations": [
        {
            # A task names catalog entries by id in its body; one that does not exist is
            # refused with 422 naming the field (the plan's contract), as a path id is with 404.
            "include-operation-id": "createTask",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
                }
            },
        }
    ],
}


class LiveServer:
    """The real app on uvicorn, in a thread with its own event loop."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ids: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60) or self._error:
            raise RuntimeError(f"the API did not start: {self._error!r}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        async with open_services(settings_for(self.database_url)) as services:
            await self._seed(services)
            config = uvicorn.Config(
                create_app(services), host="127.0.0.1", port=self.port, log_level="warning"
            )
            self._server = uvicorn.Server(config)
            serving = asyncio.create_task(self._server.serve())
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            self._ready.set()
            await serving

    async def _seed(self, services: Services) -> None:
        app = services.app
        await services.run_sync(load_catalog, app, demo_catalog())
        agents = [
            AgentConfig(10001, "red", {"attack_strategy": "aggressive"}),
            AgentConfig(10002, "blue", {}),
        ]
        running = await services.command(
            app.create_task, NewTask("seeded", "with logs", 1234567890, 9876543210, agents), "seed"
        )
        stopped = await services.command(
            app.create_task, NewTask("seeded-stopped", None, 1234567890, 9876543210, agents), "seed"
        )
        task_id = running.data["task_id"]
        execution_id = app.get_task(task_id).execution_ids[0]
        batch = ExecutionLog.batch(1, execution_id, task_id, log_lines(30), {})
        recordings = await services.run_sync(app.save, batch)
        await services.runner.wait_for(recordings[-1].notification.id, 10)
        await services.command(app.request_stop, stopped.data["task_id"], "seed")
        self.ids = {
            "task": task_id,
            "stopped_task": stopped.data["task_id"],
            "execution": execution_id,
        }


@pytest.fixture(scope="module")
def live_api(server_url: str) -> Iterator[LiveServer]:
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(server_url, name)
    server = LiveServer(with_database(server_url, name))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        drop_database(server_url, name)


schema = schemathesis.openapi.from_dict(
    openapi_document(), config=SchemathesisConfig.from_dict(CONFIG)
)


def test_the_served_schema_is_the_one_tested(live_api: LiveServer) -> None:
    """/schema/openapi.json serves the document the generated requests come from."""
    served = requests.get(f"{live_api.base}/schema/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi_document()
    assert served.json()["openapi"].startswith("3.1")


@schema.parametrize()
def test_generated_requests_get_no_server_error_and_conforming_answers(
    case: schemathesis.Case, live_api: LiveServer
) -> None:
    """Every operation answers generated (valid and invalid) requests without a 5xx,
    with a documented status and a body matching its documented schema."""
    case.call_and_validate(base_url=live_api.base)


StatefulTest = schema.as_state_machine()


@pytest.mark.slow
@pytest.mark.xfail(
    reason="hypothesis stops the run with FlakyStrategyDefinition: the live database changes"
    " between a sequence and its replay",
    strict=False,
)
def test_linked_call_sequences_get_conforming_answers(live_api: LiveServer) -> None:
    """Sequences that follow the document's links (create -> detail -> agents -> logs ->
    update -> stop, catalog create -> read) pass every check at each step."""

    class Machine(StatefulTest):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, str]:
            return {"base_url": live_api.base}

    Machine.run(
        settings=hypothesis.settings(
            max_examples=25, stateful_step_count=8, deadline=None, derandomize=True,
            phases=[hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck), database=None,
        )
    )  # fmt: skip


def test_the_schema_has_browsable_pages(live_api: LiveServer) -> None:
    """Swagger UI, Stoplight Elements and Scalar pages are served under /schema."""
    for page in ("swagger", "elements", "scalar"):
        answer = requests.get(f"{live_api.base}/schema/{page}", timeout=10)
        assert answer.status_code == 200, page
        assert answer.headers["content-type"].startswith("text/html")
        assert "Deduction API" in answer.text
