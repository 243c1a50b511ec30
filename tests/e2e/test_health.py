"""The process answers health and readiness probes over HTTP."""

from __future__ import annotations

from tests.support.api import Api


async def test_health_answers_ok(api: Api) -> None:
    status, body = await api.call("GET", "/health")
    assert status == 200
    assert body == {"code": 200, "message": "success", "data": {"status": "ok"}}


async def test_ready_reports_projection_lag(api: Api) -> None:
    status, body = await api.call("GET", "/ready")
    assert status == 200
    assert body["data"]["database"] == "ok"
    assert set(body["data"]["projection_lag"]) == {
        "tasks",
        "agents",
        "logs",
        "history",
        "catalog",
        "tokens",
        "engine_load",
    }
