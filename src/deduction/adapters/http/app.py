"""Litestar application factory: controllers, error handlers, OpenAPI and probes."""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar, Request, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    ScalarRenderPlugin,
    StoplightRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.response import Response
from litestar.types import Receive, Scope, Send

from deduction.adapters.http import auth, request_id
from deduction.adapters.http.audit import AS_OF_HEADER, AuditController
from deduction.adapters.http.catalog import CATALOG_CONTROLLERS
from deduction.adapters.http.deps import DEPENDENCIES, ReadViews
from deduction.adapters.http.engine import EngineController
from deduction.adapters.http.envelope import Envelope
from deduction.adapters.http.errors import EXCEPTION_HANDLERS, documented
from deduction.adapters.http.executions import AgentExecutionController
from deduction.adapters.http.history import HistoryController
from deduction.adapters.http.limits import STORE, rate_limit_store, rate_limits
from deduction.adapters.http.logs import LogController
from deduction.adapters.http.metrics import metrics
from deduction.adapters.http.openapi import ClosedStructSchemaPlugin, finish
from deduction.adapters.http.responses import ProbeResponse
from deduction.adapters.http.stream_hub import StreamHub
from deduction.adapters.http.streams import StreamController, task_socket
from deduction.adapters.http.tasks import TaskController
from deduction.adapters.metrics import METRICS
from deduction.adapters.postgres import READS, with_timeouts
from deduction.application.services import Services
from deduction.config import Settings, cors_origins
from deduction.projections.changes import PostgresChangeView
from deduction.projections.runner import status
from deduction.projections.tokens import PostgresTokenView

API_VERSION = "1.0.0"
READY_MAX_LAG = 10_000


def envelope(data: Any, code: int = 200, message: str = "success") -> Response[Envelope[Any]]:
    return Response(Envelope(code, message, data), status_code=code)


@get("/health", sync_to_thread=False, operation_id="health", tags=["probes"], opt=auth.PUBLIC)
def health() -> Response[ProbeResponse]:
    """The process is up."""
    return envelope({"status": "ok"})


@get("/ready", operation_id="ready", tags=["probes"], responses=documented(503), opt=auth.PUBLIC)
async def ready(state: State) -> Response[ProbeResponse]:
    """The database answers, no save is stuck, and the projections are not far behind;
    `polls` shows whether poll work is being delayed or shed under overload;
    `dead_letters` counts, per projection, the events it could not apply and parked
    (the service still answers: see `deduction projections dead-letters`)."""
    services: Services = state.services
    try:
        async with services.pool.connection(timeout=2) as conn:
            rows = await status(conn)
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        return envelope({"database": "unreachable", "error": str(e)}, 503, "not ready")
    lag = {r.name: r.lag for r in rows}
    save_age = services.stuck_save_age()
    data = {"database": "ok", "projection_lag": lag, "oldest_save_s": round(save_age, 3),
            "polls": services.poll_load.report(),
            "dead_letters": {r.name: r.parked for r in rows if r.parked},
            "projection_error": getattr(services.runner, "last_error", None)}  # fmt: skip
    if save_age > services.settings.save_stuck_after:
        return envelope(data, 503, f"the write path is stuck: a save has run {save_age:.0f}s")
    ok = all(v <= READY_MAX_LAG for v in lag.values())
    return envelope(data, 200 if ok else 503, "success" if ok else "projections are behind")


def _untyped(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


async def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """OPTIONS lists every method of the path.

    Litestar 2.25 builds the automatic OPTIONS answer of a path from the first
    handler registered on it, so a collection with GET and POST would answer
    `Allow: OPTIONS, POST`. (Async, so it runs on the loop, not in a thread per request.)
    """
    if request.method != HttpMethod.OPTIONS:
        return None
    template = request.scope.get("path_template", "")
    methods = {
        method
        for path, handlers in request.app.route_handler_method_map.items()
        if _untyped(path) == template
        for method in handlers
    }
    allow = ", ".join(sorted({*methods, HttpMethod.OPTIONS}))
    return Response(None, status_code=204, headers={"Allow": allow})


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Deduction API",
        version=API_VERSION,
        description=(
            "Runs simulation exercises on the Engine. Every response is an envelope"
            " {code, message, data} whose code equals the HTTP status."
        ),
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(path="/swagger"),
            StoplightRenderPlugin(path="/elements"),
            ScalarRenderPlugin(path="/scalar"),
            JsonRenderPlugin(path="/openapi.json"),
        ],
    )


class DeductionApi(Litestar):
    """The Litestar app, with a request id around everything it answers (404s and 401s too),
    and each HTTP request timed by route and status when metrics are on."""

    observe: request_id.Observe | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
            return
        await request_id.with_request_id(scope, receive, send, self._answer, self.observe)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


EXPOSED_HEADERS = [request_id.HEADER, "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                   "RateLimit-Reset", "RateLimit-Policy", AS_OF_HEADER]  # fmt: skip
ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Operator", "Idempotency-Key",
                   request_id.HEADER, "Last-Event-ID"]  # fmt: skip


def _cors(settings: Settings) -> CORSConfig | None:
    origins = cors_origins(settings)
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_headers=ALLOWED_HEADERS,
                      expose_headers=EXPOSED_HEADERS, allow_credentials=False)  # fmt: skip


def _litestar(state: State, settings: Settings, hub: StreamHub | None = None) -> Litestar:
    app = DeductionApi(
        route_handlers=[
            health,
            ready,
            TaskController,
            AgentExecutionController,
            LogController,
            HistoryController,
            AuditController,
            EngineController,
            *CATALOG_CONTROLLERS,
            StreamController,
            task_socket,
            *([metrics] if settings.metrics_enabled else []),
        ],
        on_startup=[hub.start] if hub else [],
        on_shutdown=[hub.stop] if hub else [],
        before_request=answer_options,
        middleware=[auth.AuthenticationMiddleware, *rate_limits(settings)],
        stores={STORE: rate_limit_store(settings)},
        cors_config=_cors(settings),
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
        state=state,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # structlog is configured by the CLI; leave stdlib logging alone
        plugins=[ClosedStructSchemaPlugin()],
    )
    finish(app.openapi_schema, access_rules(app))  # the cached document /schema serves
    if settings.metrics_enabled:
        app.observe = METRICS.observe_http
    return app


def access_rules(app: Litestar) -> dict[str, dict[str, Any]]:
    """operationId -> the rule its handler carries (`opt`: the role it needs)."""
    rules: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            operation_id = getattr(handler, "operation_id", None)
            if isinstance(operation_id, str):
                rules[operation_id] = dict(handler.opt)
    return rules


def create_app(services: Services) -> Litestar:
    settings = services.settings
    listen_url = with_timeouts(services.database_url, READS)  # keepalives, statement bound
    hub = StreamHub(listen_url, PostgresChangeView(services.pool),
                    settings.stream_max_subscribers, settings.stream_queue_size)  # fmt: skip
    authenticator = auth.Authenticator(settings, PostgresTokenView(services.pool))
    if settings.metrics_enabled:
        services.on_command = METRICS.observe_command
    state = State({"services": services, "reads": ReadViews.over(services.pool, settings.queue_aging), "streams": hub,
                   "auth": authenticator})  # fmt: skip
    return _litestar(state, settings, hub)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as /schema/openapi.json serves it, without starting anything."""
    return _litestar(State(), Settings()).openapi_schema.to_schema()
