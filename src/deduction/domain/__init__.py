"""The domain model: aggregates, their events and errors (stdlib + eventsourcing.domain only)."""

from deduction.domain.catalog import AgentMeta, EnvInstance, Scheme
from deduction.domain.engine_load import EngineLoad
from deduction.domain.errors import (
    DomainError,
    IllegalTransitionError,
    TaskAlreadyEndedError,
)
from deduction.domain.execution import AgentExecution
from deduction.domain.idempotency import IdempotencyKey
from deduction.domain.logs import ExecutionLog
from deduction.domain.status import ACTIVE, STATUSES, TERMINAL, Status
from deduction.domain.task import DeductionTask, TaskName
from deduction.domain.tokens import ApiToken

__all__ = [
    "ACTIVE",
    "STATUSES",
    "TERMINAL",
    "AgentExecution",
    "AgentMeta",
    "ApiToken",
    "DeductionTask",
    "DomainError",
    "EngineLoad",
    "EnvInstance",
    "ExecutionLog",
    "IdempotencyKey",
    "IllegalTransitionError",
    "Scheme",
    "Status",
    "TaskAlreadyEndedError",
    "TaskName",
]
