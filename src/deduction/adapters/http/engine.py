"""EngineController: what operators see of the Engine's resources (reachability, slots, load)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, Response, get
from litestar.params import KwargDefinition

from deduction.adapters.engine import reachable
from deduction.adapters.http import auth
from deduction.adapters.http.deps import ServicesDep
from deduction.adapters.http.envelope import Envelope, Timestamp, ok
from deduction.adapters.http.errors import documented
from deduction.application.admission import Caps
from deduction.domain.times import parse_time, rfc3339
from deduction.projections.engine_load import PostgresEngineLoadView
from deduction.projections.queue import PostgresQueueView

PROBE_TIMEOUT = 2.0


class EngineLoadFigures(msgspec.Struct):
    """The load the Engine last reported, as recorded (a sample, not every reading)."""

    cpu_percent: float | None
    memory_percent: float | None
    sampled_at: Timestamp | None


class EngineSlots(msgspec.Struct):
    """Admitted tasks not ended and their agents not ended, against the caps (null: none)."""

    running_tasks: int
    max_running_tasks: int | None
    running_agents: int
    max_running_agents: int | None


class EngineStatus(msgspec.Struct):
    engine_url: str
    reachable: bool
    unreachable_reason: str | None
    circuit: Literal["closed", "open", "half-open"] | None
    """This process's circuit breaker; null where the jobs run in worker processes (their
    /metrics carry `deduction_engine_circuit_open`)."""
    failing_since: Timestamp | None
    slots: EngineSlots
    load: EngineLoadFigures | None
    """null: the Engine never offered load figures (an Engine of section 4.1 alone)."""
    max_cpu_percent: float | None
    max_memory_percent: float | None
    held_by_load: bool
    """Submissions wait: the last figures are above ENGINE_MAX_CPU/MEMORY_PERCENT."""
    queue_length: int
    oldest_queued_wait_s: float


EngineStatusResponse = Annotated[
    Envelope[EngineStatus], KwargDefinition(schema_component_key="EngineStatusResponse")
]


class EngineController(Controller):
    path = "/api/v1/deduction/engine"
    tags = ("engine",)

    @get("/status", operation_id="getEngineStatus", opt=auth.READ, responses=documented(503))
    async def engine_status(self, services: ServicesDep) -> Response[EngineStatusResponse]:
        """Whether the Engine answers now, the circuit breaker, the slots held against
        ENGINE_MAX_RUNNING_TASKS / AGENTS, the Engine's last recorded load figures (and when
        they were sampled), and the admission queue's length and oldest wait."""
        s = services.settings
        queue = PostgresQueueView(services.pool, s.queue_aging)
        occupied, (length, oldest) = await queue.occupancy(), await queue.waiting()
        row = await PostgresEngineLoadView(services.pool).latest(s.engine_url)
        why = await reachable(s.engine_url, min(PROBE_TIMEOUT, s.engine_timeout))
        engine, caps = services.engine, Caps(cpu_percent=s.engine_max_cpu_percent,
                                             memory_percent=s.engine_max_memory_percent)  # fmt: skip
        slots = EngineSlots(occupied.tasks, s.engine_max_running_tasks or None,
                            occupied.agents, s.engine_max_running_agents or None)  # fmt: skip
        load = None
        if row is not None:
            at = rfc3339(row.sampled_at) if row.sampled_at else None
            load = EngineLoadFigures(row.cpu_percent, row.memory_percent, at)
        status = EngineStatus(
            engine_url=s.engine_url,
            reachable=why is None,
            unreachable_reason=why,
            circuit=engine.circuit_state() if engine else None,  # type: ignore[arg-type]
            failing_since=_rfc3339(engine.failing_since()) if engine else None,
            slots=slots,
            load=load,
            max_cpu_percent=s.engine_max_cpu_percent,
            max_memory_percent=s.engine_max_memory_percent,
            held_by_load=caps.overloaded(row),
            queue_length=length,
            oldest_queued_wait_s=round(oldest, 3),
        )
        return Response(ok(status))


def _rfc3339(value: str | None) -> str | None:
    return rfc3339(parse_time(value)) if value else None
