"""Bounded waits: for a condition, and for the read tables to include every saved event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg import AsyncConnection

from deduction.application.services import Services

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


async def settled(services: Services) -> None:
    """Wait until the read tables include every event saved so far."""
    services.runner.kick()
    async with await AsyncConnection.connect(services.database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT coalesce(max(notification_id), 0) FROM deduction_events")
        row = await cur.fetchone()
    assert row is not None and await services.runner.wait_for(row[0], 10)
