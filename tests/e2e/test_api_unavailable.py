"""When the database or the read tables cannot answer, the API says 503 and what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from deduction.application.services import Services
from deduction.bootstrap import open_services
from tests.support.api import TASK, Api, settings_for
from tests.support.plan import plan_task


@pytest.fixture
async def services(db_url: str) -> AsyncIterator[Services]:
    """Services whose projections do not run (a worker's), so the read tables never catch up."""
    settings = settings_for(db_url, read_your_writes_timeout=2.0)  # the save fits; the tables never
    async with open_services(settings, role="worker") as s:
        yield s


async def test_a_command_the_read_tables_do_not_show_in_time_is_503(api: Api) -> None:
    """The task is saved, but the answer is 503 telling the client to read again shortly."""
    await api.services.run_sync(load_catalog, api.services.app, demo_catalog())

    status, body = await api.call("POST", f"{TASK}/create", json=plan_task())

    assert (status, body["code"]) == (503, 503)
    assert body["message"].startswith("the change was saved but is not readable yet")
    assert body["data"] is None


async def test_a_database_that_cannot_be_reached_is_503(api: Api) -> None:
    """Queries answer 503 while the database is unreachable, and /ready says not ready."""
    await api.services.pool.close()

    status, body = await api.call("GET", f"{TASK}/list")
    assert (status, body) == (
        503,
        {"code": 503, "message": "the database is unavailable; retry later", "data": None},
    )
    status, body = await api.call("GET", "/ready")
    assert (status, body["data"]["database"]) == (503, "unreachable")
