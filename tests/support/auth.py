"""Principals for tests of the secured API: tokens issued and revoked through the application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from deduction.application.services import Services
from deduction.application.tokens import issue_token, revoke_token
from deduction.bootstrap import open_services
from deduction.domain.times import utc_now
from tests.support.api import Api, serve_api, settings_for


async def issue(
    services: Services, name: str, *roles: str, lifetime: timedelta | None = None, ago: float = 0
) -> str:
    """A token for `name` with `roles`, readable by authentication when this returns; `ago`
    seconds back-dates its issue (with a lifetime shorter than that it has expired)."""
    now = utc_now() - timedelta(seconds=ago)
    issued = await services.run_sync(issue_token, services.app, name, list(roles), lifetime,
                                     "test", now)  # fmt: skip
    assert await services.runner.wait_for(issued.position, 10)
    return issued.token


async def revoke(services: Services, token: str) -> None:
    position = await services.run_sync(revoke_token, services.app, token.split("_")[1], "test")
    assert await services.runner.wait_for(position, 10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def secured_api(db_url: str, **overrides: Any) -> AsyncIterator[Api]:
    """The API with authentication on (AUTH_MODE=on unless overridden), on a loopback port."""
    settings = settings_for(db_url, **{"auth_mode": "on", **overrides})
    async with open_services(settings) as services, serve_api(services) as api:
        yield api
