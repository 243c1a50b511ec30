"""GET /metrics: the process's series in the Prometheus text format, open like the probes."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State
from litestar.response import Response

from deduction.adapters.http import auth
from deduction.adapters.metrics import CONTENT_TYPE, METRICS
from deduction.application.services import Services
from deduction.projections.engine_load import PostgresEngineLoadView
from deduction.projections.queue import PostgresQueueView
from deduction.projections.runner import status


@get("/metrics", operation_id="metrics", tags=["probes"], opt=auth.PUBLIC,
     include_in_schema=False)  # fmt: skip
async def metrics(state: State) -> Response[bytes]:
    """Every series of this process (README, "Metrics"); the read-side ones (projection lag,
    queue, the Engine's load) are read from the database at each scrape."""
    services: Services = state.services
    try:
        await _read_side(services)
    except Exception:  # noqa: BLE001, S110 - the process's own series are still worth serving
        pass
    return Response(METRICS.exposition(), media_type=CONTENT_TYPE)


async def _read_side(services: Services) -> None:
    s = services.settings
    async with services.pool.connection(timeout=2) as conn:
        for row in await status(conn):
            METRICS.projection_lag.labels(row.name).set(row.lag)
    length, oldest = await PostgresQueueView(services.pool, s.queue_aging).waiting()
    METRICS.queue_length.set(length)
    METRICS.queue_oldest.set(oldest)
    load = await PostgresEngineLoadView(services.pool).latest(s.engine_url)
    METRICS.engine_load.clear()  # no figures: no series
    for resource, value in (("cpu", load.cpu_percent if load else None),
                            ("memory", load.memory_percent if load else None)):  # fmt: skip
        if value is not None:
            METRICS.engine_load.labels(resource).set(value)
