"""Litestar application factory."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response

from deduction.bootstrap import Services
from deduction.projections.runner import status


def envelope(data: Any, code: int = 200, message: str = "success") -> Response[dict[str, Any]]:
    return Response({"code": code, "message": message, "data": data}, status_code=code)


@get("/health", sync_to_thread=False)
def health() -> Response[dict[str, Any]]:
    """The process is up."""
    return envelope({"status": "ok"})


@get("/ready")
async def ready(state: State) -> Response[dict[str, Any]]:
    """The database answers and the projections are not far behind."""
    services: Services = state.services
    try:
        async with services.pool.connection(timeout=2) as conn:
            rows = await status(conn)
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        return envelope({"database": "unreachable", "error": str(e)}, 503, "not ready")
    lag = {r.name: r.lag for r in rows}
    ok = all(v <= 10_000 for v in lag.values())
    return envelope({"database": "ok", "projection_lag": lag}, 200 if ok else 503,
                    "success" if ok else "projections are behind")


def create_app(services: Services) -> Litestar:
    return Litestar(
        route_handlers=[health, ready],
        state=State({"services": services}),
        request_max_body_size=services.settings.max_body_bytes,
    )
