"""Property-based API test: generated requests against the app's own OpenAPI schema.

The server runs in its own thread and event loop (schemathesis calls it
synchronously) over a fresh database holding the plan's catalog, a task with
log lines, and a stopped task, so generated requests meet real rows too. Authentication
is on and the requests carry an admin JWT, so the check that a secured operation refuses a
request without credentials runs too.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import jwt
import pytest
import requests
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events as engine_events

from deduction.adapters.http.app import openapi_document
from tests.support.live import LiveServer, seeded_live_server

# Authentication on, with an admin JWT every generated request carries (a known secret, so
# the token exists before the server does); rate limits off for the many generated calls.
SECRET = uuid4().hex + uuid4().hex
SECURED = {"auth_mode": "on", "auth_jwt_secret": SECRET, "auth_jwt_issuer": "tests",
           "auth_jwt_audience": "deduction", "rate_limit_commands": 0, "rate_limit_reads": 0}  # fmt: skip
ADMIN = jwt.encode({"iss": "tests", "aud": "deduction", "sub": "schemathesis", "roles": "admin",
                    "exp": int(time.time()) + 24 * 3600}, SECRET, algorithm="HS256")  # fmt: skip
# The settings a run by hand uses too (with its own token); every check with its defaults.
CONFIG = tomllib.loads((Path(__file__).parent / "schemathesis.toml").read_text()) | {
    "auth": {"openapi": {"bearer": {"bearer": ADMIN}}}
}
ONLY_STATEFUL = {
    "phases": {name: {"enabled": False} for name in ("examples", "coverage", "fuzzing")}
    | {"stateful": CONFIG["phases"]["stateful"]}
}


@pytest.fixture(scope="module")
def live_api(server_url: str) -> Iterator[LiveServer]:
    with seeded_live_server(server_url, **SECURED) as server:
        yield server


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


def run_stateful(url: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Schemathesis' own stateful engine (what `schemathesis run --phases stateful` runs)
    against the live server: the checks that failed, and the declared links it followed."""
    config = SchemathesisConfig.from_dict(CONFIG | ONLY_STATEFUL)
    loaded = schemathesis.openapi.from_url(f"{url}/schema/openapi.json", config=config)
    failed: list[str] = []
    followed: set[tuple[str, str]] = set()
    for event in engine.from_schema(loaded).execute():
        if isinstance(event, engine_events.ScenarioFinished):
            failed += [
                f"{check.name}: {event.recorder.interactions[case_id].response.status_code}"
                f" from {event.recorder.cases[case_id].value.as_curl_command()}"
                for case_id, checks in event.recorder.checks.items()
                for check in checks
                if check.status != engine.Status.SUCCESS
            ]
            followed |= {
                (link.id.split(" -> ")[0], link.id.split(" -> ")[-1])
                for node in event.recorder.cases.values()
                if (link := node.transition) and node.is_transition_applied and not link.is_inferred
            }
        elif isinstance(event, engine_events.NonFatalError | engine_events.FatalError):
            failed.append(f"error: {event.info.title}")
    return failed, followed


def test_linked_call_sequences_get_conforming_answers(live_api: LiveServer) -> None:
    """Sequences that follow the document's links (create -> detail -> agents -> logs ->
    update -> stop, catalog create -> read) pass every check at each step."""
    failed, followed = run_stateful(live_api.base)
    assert failed == []
    # Which links a run follows depends on which generated calls succeed; it follows several.
    assert len(followed) >= 2, sorted(followed)


def test_the_schema_has_browsable_pages(live_api: LiveServer) -> None:
    """Swagger UI, Stoplight Elements and Scalar pages are served under /schema."""
    for page in ("swagger", "elements", "scalar"):
        answer = requests.get(f"{live_api.base}/schema/{page}", timeout=10)
        assert answer.status_code == 200, page
        assert answer.headers["content-type"].startswith("text/html")
        assert "Deduction API" in answer.text
