"""The Engine adapters: the aiohttp client and the reference Engine."""

from deduction.adapters.engine.http import HttpEngine
from deduction.adapters.engine.resilience import CircuitBreaker, RetryPolicy

__all__ = ["CircuitBreaker", "HttpEngine", "RetryPolicy"]
