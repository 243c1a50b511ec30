"""The OpenAPI document made exact: closed request bodies, every error answer, and links."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.openapi.spec import (
    Link,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
)

from deduction.adapters.http.errors import DESCRIPTIONS
from deduction.adapters.http.schemas import NO_NUL

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

ERROR_SCHEMA = "#/components/schemas/ErrorEnvelope"
JSON_VALUE_REF = "#/components/schemas/JsonValue"
DATABASE_PATHS = "/api/"
"""Operations under this prefix read or write the database, so they can answer 503."""


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """msgspec Structs as schemas that say what the decoder enforces: a Struct that forbids
    unknown fields is `additionalProperties: false`, and a dict field with a minimum length
    has `minProperties`."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            kind = field.type
            prop = (schema.properties or {}).get(field.encode_name)
            if isinstance(kind, msgspec.inspect.DictType) and isinstance(prop, Schema):
                prop.min_properties, prop.max_properties = kind.min_length, kind.max_length
                if isinstance(kind.value_type, msgspec.inspect.AnyType):
                    prop.property_names = Schema(pattern=NO_NUL)
                    prop.additional_properties = Reference(ref=JSON_VALUE_REF)
        return schema


def implied_errors(path: str, operation: Operation) -> set[int]:
    """The error answers an operation can give because of its shape: a body can be missing,
    malformed, too large or invalid; a parameter can be invalid; a path can name nothing."""
    codes = {400}
    params = [p for p in operation.parameters or [] if not isinstance(p, Reference)]
    if operation.request_body is not None:
        codes |= {413, 422}
    if params:
        codes.add(422)
    if any(p.param_in == "path" for p in params):
        codes.add(404)
    if path.startswith(DATABASE_PATHS):
        codes.add(503)
    return codes


def error_response(code: int) -> OpenAPIResponse:
    media = OpenAPIMediaType(schema=Reference(ref=ERROR_SCHEMA))
    return OpenAPIResponse(description=DESCRIPTIONS[code], content={"application/json": media})


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations_of(document: OpenAPI) -> list[tuple[str, Operation]]:
    """Every (path, operation) of the document."""
    return [
        (path, operation)
        for path, item in (document.paths or {}).items()
        for operation in (getattr(item, method) for method in METHODS)
        if operation is not None
    ]


def declare_errors(document: OpenAPI) -> None:
    """Every operation lists each error answer it can give, with the envelope schema."""
    for path, operation in operations_of(document):
        responses = operation.responses if operation.responses is not None else {}
        for code in sorted(implied_errors(path, operation)):
            responses.setdefault(str(code), error_response(code))
        operation.responses = dict(sorted(responses.items()))


TASK_ID = "$response.body#/data/task_id"
SAME_TASK = "$request.path.task_id"
FIRST_EXECUTION = "$response.body#/data/0/id"
ENTRY_ID = "$response.body#/data/id"


def _update_first(execution: str) -> dict[str, Any]:
    return {"agent_configs": [{"agent_execution_id": execution, "params": {"note": "changed"}}]}


def _task_links(task: str) -> dict[str, dict[str, Any]]:
    return {
        "GetTask": {"operationId": "getTask", "parameters": {"path.task_id": task}},
        "ListTaskAgents": {"operationId": "listTaskAgents", "parameters": {"path.task_id": task}},
        "ListTaskLogs": {"operationId": "listTaskLogs", "parameters": {"path.task_id": task}},
        "GetTaskHistory": {"operationId": "getTaskHistory", "parameters": {"path.task_id": task}},
        "StopTask": {"operationId": "stopTask", "parameters": {"path.task_id": task}},
    }


def _pick(links: dict[str, dict[str, Any]], *names: str) -> dict[str, dict[str, Any]]:
    return {name: links[name] for name in names}


LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    # create -> detail -> agents -> logs -> update -> stop, and back to the task from each step
    ("createTask", "200"): _task_links(TASK_ID),
    ("getTask", "200"): {
        **_pick(_task_links("$response.body#/data/id"), "ListTaskAgents", "StopTask"),
        "GetFirstAgentExecution": {
            "operationId": "getAgentExecution",
            "parameters": {"path.execution_id": "$response.body#/data/agent_executions/0/id"},
        },
    },
    ("listTaskAgents", "200"): {
        "GetFirstAgentExecution": {
            "operationId": "getAgentExecution",
            "parameters": {"path.execution_id": FIRST_EXECUTION},
        },
        "ListFirstExecutionLogs": {
            "operationId": "listExecutionLogs",
            "parameters": {"path.execution_id": FIRST_EXECUTION},
        },
        "UpdateFirstAgent": {
            "operationId": "updateTask",
            "parameters": {"path.task_id": SAME_TASK},
            "requestBody": _update_first(FIRST_EXECUTION),
        },
        **_pick(_task_links(SAME_TASK), "ListTaskLogs"),
    },
    ("getAgentExecution", "200"): {
        "ListExecutionLogs": {
            "operationId": "listExecutionLogs",
            "parameters": {"path.execution_id": "$response.body#/data/id"},
        },
        **_pick(_task_links("$response.body#/data/deduction_task_id"), "GetTask"),
    },
    ("listTaskLogs", "200"): _pick(_task_links(SAME_TASK), "ListTaskAgents", "StopTask"),
    ("updateTask", "200"): _pick(_task_links(SAME_TASK), "GetTask", "GetTaskHistory", "StopTask"),
    ("stopTask", "200"): _pick(_task_links(TASK_ID), "GetTask", "ListTaskAgents", "GetTaskHistory"),
    ("createAgentMeta", "201"): {
        "GetAgentMeta": {"operationId": "getAgentMeta", "parameters": {"path.entry_id": ENTRY_ID}}
    },
    ("createScheme", "201"): {
        "GetScheme": {"operationId": "getScheme", "parameters": {"path.entry_id": ENTRY_ID}}
    },
    ("createEnvInstance", "201"): {
        "GetEnvInstance": {
            "operationId": "getEnvInstance",
            "parameters": {"path.entry_id": ENTRY_ID},
        }
    },
}


def _operations(document: OpenAPI) -> dict[str, Operation]:
    return {op.operation_id: op for _, op in operations_of(document) if op.operation_id}


def declare_links(document: OpenAPI) -> None:
    """Links from a response to the operations its ids lead to (followed by stateful tests
    and by generated clients); a link to an operation the app does not have is left out."""
    operations = _operations(document)
    for (source, status), links in LINKS.items():
        response = (
            (operations[source].responses or {}).get(status) if source in operations else None
        )
        if not isinstance(response, OpenAPIResponse):
            continue
        response.links = {
            name: Link(
                operation_id=link["operationId"],
                parameters=link.get("parameters"),
                request_body=link.get("requestBody"),
            )
            for name, link in links.items()
            if link["operationId"] in operations
        }


BRANCH_KEYWORDS = (
    "minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "min_length", "max_length",
    "pattern", "format", "items", "min_items", "max_items",
)  # fmt: skip


def constrain_branches(document: OpenAPI) -> None:
    """An optional parameter is `oneOf: [T, null]`; its bounds go into the T branch, where
    every generator and validator applies them (beside the oneOf, some ignore them)."""
    for _, operation in operations_of(document):
        for param in operation.parameters or []:
            schema = getattr(param, "schema", None)
            if not isinstance(schema, Schema) or not schema.one_of:
                continue
            for keyword in BRANCH_KEYWORDS:
                value = getattr(schema, keyword)
                if value is None:
                    continue
                for branch in schema.one_of:
                    if isinstance(branch, Schema) and branch.type != OpenAPIType.NULL:
                        setattr(branch, keyword, value)
                setattr(schema, keyword, None)
            if isinstance(param, Parameter) and param.param_in == "header":
                # a header is text or absent, never JSON null: keep the text branch alone
                texts = [b for b in schema.one_of
                         if isinstance(b, Schema) and b.type != OpenAPIType.NULL]  # fmt: skip
                if len(texts) == 1:
                    param.schema = texts[0]


def json_value() -> Schema:
    """Free-form JSON (params, config) as the server stores it: no NUL in keys or strings."""
    ref = Reference(ref=JSON_VALUE_REF)
    return Schema(
        title="JsonValue",
        description="any JSON value without NUL characters in its strings or keys",
        one_of=[
            Schema(type=OpenAPIType.NULL),
            Schema(type=OpenAPIType.BOOLEAN),
            Schema(type=OpenAPIType.NUMBER),
            Schema(type=OpenAPIType.STRING, pattern=NO_NUL),
            Schema(type=OpenAPIType.ARRAY, items=ref),
            Schema(
                type=OpenAPIType.OBJECT,
                property_names=Schema(pattern=NO_NUL),
                additional_properties=ref,
            ),
        ],
    )


BEARER = "bearer"
SECURITY_ERRORS = (401, 403, 429)


def bearer_scheme() -> SecurityScheme:
    return SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="API token (ddt_...) or JWT",
        description="An API token from `deduction tokens create`, or a JWT from the identity"
        " provider (AUTH_JWT_*). Not needed while authentication is off (loopback, no auth"
        " configured, or AUTH_MODE=off).",
    )


def declare_security(document: OpenAPI, rules: Mapping[str, Mapping[str, Any]]) -> None:
    """The bearer scheme (Swagger's Authorize button), and on each operation the role it needs
    and the answers a refused or throttled caller gets; public operations need nothing."""
    document.components.security_schemes = {BEARER: bearer_scheme()}
    for _, operation in operations_of(document):
        rule = rules.get(operation.operation_id or "", {})
        if "role" in rule and rule["role"] is None:
            operation.security = []
            continue
        operation.security = [{BEARER: []}]
        need = f"Needs the `{rule.get('role', 'admin')}` role"
        if rule.get("as_of_role"):
            need += f"; with as_of or as_of_position, the `{rule['as_of_role']}` role"
        need += " (`admin` may do everything)."
        operation.description = (
            f"{operation.description}\n\n{need}" if operation.description else need
        )
        responses = operation.responses if operation.responses is not None else {}
        for code in SECURITY_ERRORS:
            responses.setdefault(str(code), error_response(code))
        operation.responses = dict(sorted(responses.items()))


def finish(document: OpenAPI, rules: Mapping[str, Mapping[str, Any]] | None = None) -> OpenAPI:
    if document.components.schemas is not None:
        document.components.schemas["JsonValue"] = json_value()
    constrain_branches(document)
    declare_errors(document)
    declare_links(document)
    declare_security(document, rules or {})
    return document
