"""Shared fixtures: a fresh database per test on the real server, the API over real HTTP.

DATABASE_URL (CI gives the machine's server) is used when set; otherwise the
embedded PostgreSQL starts in .data/test. REDIS_URL likewise; tests that need
Redis skip when none answers, except under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import msgspec
import pytest
import uvicorn

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
from deduction.config import Settings

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


def test_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "engine_url": "http://127.0.0.1:9",
        "task_poll_enabled": False,
        "read_your_writes_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    async with open_services(test_settings(db_url)) as s:
        yield s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """A client of the API served by a real uvicorn server on a loopback port."""

    def __init__(self, base: str, session: aiohttp.ClientSession, services: Services) -> None:
        self.base, self.session, self.services = base, session, services

    async def call(
        self, method: str, path: str, json: Any = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(method, self.base + path, json=json, **kwargs) as r:
            body = await r.read()
            return r.status, msgspec.json.decode(body) if body else {}


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    async with serve(services) as client:
        yield client


@contextlib.asynccontextmanager
async def serve(services: Services) -> AsyncIterator[Api]:
    """The API of `services` on a real uvicorn server, and a client of it."""
    from deduction.adapters.http.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{port}", session, services)
    server.should_exit = True
    await task


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
