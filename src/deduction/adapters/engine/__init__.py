"""The Engine adapter: the aiohttp client of the plan's section-4.1 API, with its resilience."""

from deduction.adapters.engine.http import HttpEngine, engine_session, reachable
from deduction.adapters.engine.resilience import CircuitBreaker, RetryPolicy

__all__ = ["CircuitBreaker", "HttpEngine", "RetryPolicy", "engine_session", "reachable"]
