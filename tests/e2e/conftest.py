"""Journeys over HTTP: the API with the plan's catalog, and the plan's task created through it."""

from __future__ import annotations

from typing import Any

import pytest

from deduction.application.catalog_import import demo_catalog, load_catalog
from tests.support.api import Api, create_task


@pytest.fixture
async def catalog(api: Api) -> Api:
    """The API with the plan's catalog: agents 10001/10002, scheme 1234567890, env 9876543210."""
    position = await api.services.run_sync(load_catalog, api.services.app, demo_catalog())
    assert await api.services.runner.wait_for(position, 10)
    return api


@pytest.fixture
async def task(catalog: Api) -> dict[str, Any]:
    """The plan's example task, created over HTTP; its detail as the API shows it."""
    return await create_task(catalog)
