"""After PostgreSQL restarts, the API's pools hand out live connections: no burst of 503s."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.bootstrap import open_services
from tests.support.api import TASK, serve_api, settings_for
from tests.support.own_postgres import OwnPostgres, own_postgres
from tests.support.plan import plan_task
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres() -> Iterator[OwnPostgres]:
    # A directory of its own: pytest's base temporary directory is pruned by other runs.
    data_dir = Path(tempfile.mkdtemp(prefix="deduction-pg-"))
    try:
        with own_postgres(data_dir) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_reads_and_commands_succeed_at_once_when_postgres_is_back(
    postgres: OwnPostgres,
) -> None:
    """Every read pool connection open before `restart -m immediate` is dead afterwards; the
    first requests once the server is back are still all 200 (the pool checks a connection
    before handing it out), and a command is saved and read back."""
    async with open_services(settings_for(postgres.url)) as services, \
            serve_api(services) as api:  # fmt: skip
        assert await services.runner.wait_for(
            await services.run_sync(load_catalog, services.app, demo_catalog()), 10
        )

        async def burst() -> list[int]:
            answers = await asyncio.gather(
                *(api.call("GET", f"{TASK}/list") for _ in range(services.pool.max_size))
            )
            return [status for status, _ in answers]

        assert set(await burst()) == {200}
        assert services.pool.get_stats()["pool_size"] > 1  # several connections to go stale
        await asyncio.to_thread(postgres.restart_immediate)

        async def back() -> bool:
            try:
                async with await psycopg.AsyncConnection.connect(postgres.url):
                    return True
            except psycopg.OperationalError:
                return False

        await wait_until(back, timeout=30, interval=0.1)
        after = [await burst() for _ in range(3)]
        status, created = await api.call("POST", f"{TASK}/create", json=plan_task())

    assert after == [[200] * services.pool.max_size] * 3
    assert status == 200, created
