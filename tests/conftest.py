"""Shared fixtures: a fresh database per test on the real server, the API over real HTTP.

DATABASE_URL (CI gives the machine's server) is used when set; otherwise the
embedded PostgreSQL starts in .data/test. REDIS_URL likewise; tests that need
Redis skip when none answers, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from deduction.adapters.postgres import (
    create_database,
    drop_database,
    eventsourcing_env,
    start_embedded,
    with_database,
)
from deduction.application.service import DeductionApp
from deduction.application.services import Services
from deduction.bootstrap import open_services
from tests.support.api import Api, serve_api, settings_for
from tests.support.engine import LiveEngine, live_engine

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def server_url() -> str:
    """The PostgreSQL server the tests use (a database on it is made per test)."""
    return os.environ.get("DATABASE_URL") or start_embedded(ROOT / ".data" / "test")


@pytest.fixture
def db_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the real server, dropped after the test."""
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(server_url, name)
    try:
        yield with_database(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture
def embedded_db_url() -> Iterator[str]:
    """A fresh database on the embedded server, reached over its Unix socket (as
    `deduction serve` without DATABASE_URL does), dropped after the test."""
    server = start_embedded(ROOT / ".data" / "test")
    name = f"dtest_{uuid4().hex[:12]}"
    create_database(server, name)
    try:
        yield with_database(server, name)
    finally:
        drop_database(server, name)


@pytest.fixture
def app(db_url: str) -> Iterator[DeductionApp]:
    application = DeductionApp(env=eventsourcing_env(db_url))
    yield application
    application.close()


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    async with open_services(settings_for(db_url)) as s:
        yield s


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    """The API over `services`, served by uvicorn on a loopback port."""
    async with serve_api(services) as client:
        yield client


@pytest.fixture
async def live(request: pytest.FixtureRequest) -> AsyncIterator[LiveEngine]:
    """A reference Engine on a loopback port; indirect parametrisation sets its knobs."""
    async with live_engine(**getattr(request, "param", {})) as engine:
        yield engine


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis; skipped (failed under CI) when none answers."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host_port = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(16).startswith(b"+PONG"):
                raise OSError("no PONG")
    except OSError as e:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} is required under CI but unreachable: {e}")
        pytest.skip(f"Redis at {url} is unreachable: {e}")
    return url
