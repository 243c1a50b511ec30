"""Request bodies: msgspec Structs that reject unknown fields, and the checks types cannot say."""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeAlias

import msgspec

from deduction.domain.ids import MAX_ID
from deduction.domain.task import Priority
from deduction.domain.text import MAX_NAME_CHARS, MAX_SHORT_NAME_CHARS, NUL

NO_CONTROL = r"^[^\x00-\x1F\x7F]*[^\x00-\x20\x7F][^\x00-\x1F\x7F]*$"
"""Names: not blank, no control characters (they break logs, terminals and CSV exports)."""
NO_NUL = r"^[^\x00]*$"
"""Free text: anything PostgreSQL can store, i.e. no NUL character."""
OPERATOR = rf"^[\x20-\x7E]{{1,{MAX_SHORT_NAME_CHARS}}}$"
"""X-Operator: printable ASCII, as HTTP headers carry it reliably."""
MAX_JSON_DEPTH = 32

Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="integer id, 1..2^53-1")]


def _name(max_length: int, description: str) -> msgspec.Meta:
    return msgspec.Meta(
        min_length=1, max_length=max_length, pattern=NO_CONTROL, description=description
    )


_LONG, _SHORT = MAX_NAME_CHARS, MAX_SHORT_NAME_CHARS
Name: TypeAlias = Annotated[
    str, _name(_LONG, f"1..{_LONG} characters, not blank, no control characters")
]
ShortName: TypeAlias = Annotated[
    str, _name(_SHORT, f"1..{_SHORT} characters, not blank, no control characters")
]
LoadName: TypeAlias = Annotated[
    str, _name(_LONG, f"the Engine's load name of the agent, 1..{_LONG} characters")
]
Side: TypeAlias = Annotated[
    str, _name(_SHORT, f"the agent's side, e.g. red or blue (1..{_SHORT} characters)")
]
Description = Annotated[
    str, msgspec.Meta(max_length=512, pattern=NO_NUL, description="at most 512 characters")
]
JsonObject = dict[str, Any]


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One agent of a new task: which catalog agent, on which side, with which params."""

    agent_meta_id: Id
    side: Side
    params: JsonObject = msgspec.field(default_factory=dict)
    max_retry: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3


class TaskCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    scheme_id: Id
    env_instance_id: Id
    agent_configs: Annotated[list[AgentConfig], msgspec.Meta(min_length=1, max_length=1000)]
    description: Description | None = None
    priority: Priority | None = None
    """Admission order when the Engine's caps hold tasks back: high, normal or low (absent
    or null: normal)."""


class TaskPriorityChange(msgspec.Struct, forbid_unknown_fields=True):
    """A higher priority for a task that still waits for admission."""

    priority: Priority


class AgentParamsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """New values for some params of one execution: keys given replace, others stay."""

    agent_execution_id: Id
    params: Annotated[JsonObject, msgspec.Meta(min_length=1)]


class TaskUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """An execution listed twice gets both changes, in list order."""

    agent_configs: Annotated[list[AgentParamsUpdate], msgspec.Meta(min_length=1, max_length=1000)]


class AgentMetaCreate(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    name: ShortName
    load: LoadName
    description: Description | None = None


class SchemeCreate(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    name: Name
    config: JsonObject = msgspec.field(default_factory=dict)


class EnvInstanceCreate(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    name: Name
    config: JsonObject = msgspec.field(default_factory=dict)


class InputError(Exception):
    """The request is well-formed JSON but its content is not acceptable (422)."""

    def __init__(self, field: str, message: str) -> None:
        """`message` is a whole sentence that names the field."""
        super().__init__(message)
        self.field, self.message = field, message


def check_json(value: Any, path: str, depth: int = 0) -> None:
    """Free-form JSON (params, config) must be storable as jsonb and readable back.

    PostgreSQL rejects NUL in jsonb strings, and a projection that cannot store
    an event would stop there, so such values are refused before any event.
    """
    if depth > MAX_JSON_DEPTH:
        raise InputError(path, f"{path} is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if NUL in value:
            raise InputError(path, f"{path} must not contain NUL characters (\\u0000)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(path, f"{path} must be a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                raise InputError(path, f"{path} keys must not contain NUL characters (\\u0000)")
            check_json(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]", depth + 1)


def check_task_create(body: TaskCreate) -> None:
    for i, cfg in enumerate(body.agent_configs):
        check_json(cfg.params, f"agent_configs[{i}].params")


def check_task_update(body: TaskUpdate) -> None:
    for i, cfg in enumerate(body.agent_configs):
        check_json(cfg.params, f"agent_configs[{i}].params")
