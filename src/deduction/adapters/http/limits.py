"""Per-principal rate limits (commands and reads apart), shared through Redis when it is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import ASGIApp, Receive, Scope, Send

from deduction.config import Settings

STORE = "rate_limit"
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD"})


def _limited(scope: Scope, methods: frozenset[str]) -> bool:
    """Authenticated callers of a guarded route; open mode has no principals to limit."""
    principal = scope.get("user")
    return (
        scope.get("method") in methods
        and principal is not None
        and principal.kind != "open"
        and scope["route_handler"].opt.get("role") is not None
    )


def _config(kind: str, per_minute: int, methods: frozenset[str]) -> DefineMiddleware:
    def identify(request: Request[Any, Any, Any]) -> str:
        return f"{kind}:{request.scope['user'].kind}:{request.scope['user'].name}"

    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=identify,
        store=STORE,
    ).middleware


def _only_when_limited(
    define: DefineMiddleware, methods: frozenset[str]
) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar's limiter, entered only by the requests it may count. Entering it costs a
    Request object and two calls per request even when its check says no (measured: 0.13 ms
    of CPU per detail read with both limiters in an open-mode API), so a request with no
    principal to count, or of the other kind, goes straight on."""

    def build(app: ASGIApp) -> ASGIApp:
        limited = define(app)

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            if _limited(scope, methods):
                await limited(scope, receive, send)
            else:
                await app(scope, receive, send)

        return route

    return build


def rate_limits(settings: Settings) -> list[Callable[[ASGIApp], ASGIApp]]:
    limits = [("commands", settings.rate_limit_commands, COMMAND_METHODS),
              ("reads", settings.rate_limit_reads, READ_METHODS)]  # fmt: skip
    return [
        _only_when_limited(_config(kind, n, methods), methods)
        for kind, n, methods in limits
        if n > 0
    ]


def rate_limit_store(settings: Settings) -> Store:
    """Redis when REDIS_URL is set, so every API process counts the same requests."""
    if settings.redis_url:
        namespace = f"{settings.worker_queue}:rate_limit"
        return RedisStore.with_client(url=settings.redis_url, namespace=namespace)
    return MemoryStore()
