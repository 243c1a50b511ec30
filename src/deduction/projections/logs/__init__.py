"""The agent_execution_log read model: its tables, its projection, and the queries made of it."""

from deduction.projections.logs.handlers import LINE_ID_FACTOR, LogProjection
from deduction.projections.logs.table import DDL, READ_COLUMNS
from deduction.projections.logs.view import LogFilter, LogLines, LogView, PostgresLogView, Scope

__all__ = [
    "DDL",
    "LINE_ID_FACTOR",
    "READ_COLUMNS",
    "LogFilter",
    "LogLines",
    "LogProjection",
    "LogView",
    "PostgresLogView",
    "Scope",
]
