"""Each response Struct carries exactly the columns its read model's queries select, in order."""

from __future__ import annotations

import msgspec
import pytest

from deduction.adapters.http import views
from deduction.adapters.http.catalog import KINDS
from deduction.projections import agents, catalog, history, logs, tasks


@pytest.mark.parametrize(
    ("struct", "columns"),
    [
        (views.Task, tasks.READ_COLUMNS + tasks.COMPUTED_COLUMNS),
        (views.AgentExecution, agents.READ_COLUMNS),
        (views.LogLine, logs.READ_COLUMNS),
        (views.HistoryEntry, history.READ_COLUMNS),
        *[(struct, catalog.READ_COLUMNS[kind]) for struct, (kind, _) in KINDS.items()],
    ],
)
def test_the_struct_fields_are_the_read_columns(
    struct: type[msgspec.Struct], columns: tuple[str, ...]
) -> None:
    assert struct.__struct_fields__ == columns


@pytest.mark.parametrize(
    ("struct", "time_columns"),
    [(views.Task, tasks.TIME_COLUMNS), (views.AgentExecution, agents.TIME_COLUMNS)],
)
def test_the_columns_rendered_as_times_are_the_timestamp_fields(
    struct: type[msgspec.Struct], time_columns: frozenset[str]
) -> None:
    """The task detail JSON formats exactly the fields the Struct declares as Timestamp."""
    timestamps = {name for name, kind in struct.__annotations__.items() if "Timestamp" in str(kind)}
    assert timestamps == time_columns
