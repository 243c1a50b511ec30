"""What a process's adapters are handed: the application, its command pool and read-your-writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from deduction.application.ports import Dispatcher, NoDispatcher, ReadModels
from deduction.application.service import DeductionApp, Receipt
from deduction.config import Settings


class ReadModelLagError(Exception):
    """The command was saved, but the read tables did not include it in time (503)."""


@dataclass
class Services:
    settings: Settings
    database_url: str
    app: DeductionApp
    runner: ReadModels
    pool: AsyncConnectionPool
    executor: ThreadPoolExecutor
    dispatcher: Dispatcher = field(default_factory=NoDispatcher)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous application call in the bounded command thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def command(self, fn: Callable[..., Receipt], *args: Any) -> Receipt:
        """Run a command, then wait until the read tables include its events."""
        receipt: Receipt = await self.run_sync(fn, *args)
        self.runner.kick()
        if not await self.runner.wait_for(
            receipt.position, self.settings.read_your_writes_timeout
        ):
            raise ReadModelLagError(
                f"saved, but the read tables did not reach position {receipt.position}"
                f" within {self.settings.read_your_writes_timeout}s"
            )
        return receipt
