"""Envelope types of each operation, named so the OpenAPI components read well."""

from __future__ import annotations

from typing import Annotated, Any

from litestar.params import KwargDefinition

from deduction.adapters.http import views
from deduction.adapters.http.envelope import Envelope


def _named(key: str) -> KwargDefinition:
    return KwargDefinition(schema_component_key=key)


ProbeResponse = Annotated[Envelope[dict[str, Any]], _named("ProbeResponse")]
TaskCreatedResponse = Annotated[Envelope[views.TaskCreated], _named("TaskCreatedResponse")]
TaskDetailResponse = Annotated[Envelope[views.TaskDetail], _named("TaskDetailResponse")]
TaskPageResponse = Annotated[Envelope[views.TaskPage], _named("TaskPageResponse")]
TaskStoppedResponse = Annotated[Envelope[views.TaskStopped], _named("TaskStoppedResponse")]
TaskPriorityResponse = Annotated[Envelope[views.TaskPriority], _named("TaskPriorityResponse")]
TaskUpdatedResponse = Annotated[Envelope[views.TaskUpdated], _named("TaskUpdatedResponse")]
AgentExecutionResponse = Annotated[Envelope[views.AgentExecution], _named("AgentExecutionResponse")]
AgentExecutionListResponse = Annotated[
    Envelope[list[views.AgentExecution]], _named("AgentExecutionListResponse")
]
LogPageResponse = Annotated[Envelope[views.LogPage], _named("LogPageResponse")]
HistoryResponse = Annotated[Envelope[list[views.HistoryEntry]], _named("HistoryResponse")]
AgentMetaResponse = Annotated[Envelope[views.AgentMeta], _named("AgentMetaResponse")]
AgentMetaPageResponse = Annotated[Envelope[views.AgentMetaPage], _named("AgentMetaPageResponse")]
SchemeResponse = Annotated[Envelope[views.Scheme], _named("SchemeResponse")]
SchemePageResponse = Annotated[Envelope[views.SchemePage], _named("SchemePageResponse")]
EnvInstanceResponse = Annotated[Envelope[views.EnvInstance], _named("EnvInstanceResponse")]
EnvInstancePageResponse = Annotated[
    Envelope[views.EnvInstancePage], _named("EnvInstancePageResponse")
]
