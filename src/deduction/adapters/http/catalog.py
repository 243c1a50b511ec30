"""Catalog controllers: agent metas, schemes and environment instances that tasks refer to."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import BodyKwarg

from deduction.adapters.http import queries, views
from deduction.adapters.http.bodies import strict_body
from deduction.adapters.http.deps import ServicesDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import EntryId, Operator, PageNo, PageSize
from deduction.adapters.http.responses import (
    AgentMetaPageResponse,
    AgentMetaResponse,
    EnvInstancePageResponse,
    EnvInstanceResponse,
    SchemePageResponse,
    SchemeResponse,
)
from deduction.adapters.http.schemas import (
    AgentMetaCreate,
    EnvInstanceCreate,
    SchemeCreate,
    check_json,
)
from deduction.application.service import NotFoundError
from deduction.application.services import Services

V = TypeVar("V", bound=msgspec.Struct)
P = TypeVar("P", bound=msgspec.Struct)
AnyRequest = Request[Any, Any, Any]
PREFIX = "/api/v1/catalog"
CREATED = 201
_CREATE_ERRORS = documented(400, 409, 413, 422, 503)
_GET_ERRORS = documented(404, 422, 503)
_LIST_ERRORS = documented(422, 503)


async def _page(
    services: Services, view: type[V], page_view: type[P], page: int, size: int
) -> P:
    async with services.pool.connection() as conn:
        total, rows = await queries.catalog_page(conn, view, page, size)
    items = [views.from_row(view, r) for r in rows]
    return page_view(total=total, page=page, size=size, items=items)


async def _entry(services: Services, view: type[V], kind: str, entry_id: int) -> V:
    async with services.pool.connection() as conn:
        row = await queries.catalog_entry(conn, view, entry_id)
    if row is None:
        raise NotFoundError(kind, entry_id)
    return views.from_row(view, row)


class AgentMetaController(Controller):
    path = f"{PREFIX}/agent-metas"
    tags = ["catalog"]

    @post("/", status_code=CREATED, operation_id="createAgentMeta", responses=_CREATE_ERRORS)
    async def create_agent_meta(
        self,
        services: ServicesDep,
        request: AnyRequest,
        data: Annotated[AgentMetaCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        operator: Operator = "anonymous",
    ) -> AgentMetaResponse:
        """Register an agent the Engine can load, under the caller's id (409 if taken)."""
        body = await strict_body(request, AgentMetaCreate)
        app = services.app
        await services.command(
            app.create_agent_meta, body.id, body.name, body.load, body.description, operator
        )
        entry = await _entry(services, views.AgentMeta, "agent meta", body.id)
        return ok(entry, code=CREATED)

    @get("/", operation_id="listAgentMetas", responses=_LIST_ERRORS)
    async def list_agent_metas(
        self, services: ServicesDep, page: PageNo = 1, size: PageSize = 20
    ) -> AgentMetaPageResponse:
        """Agent metas in id order."""
        return ok(await _page(services, views.AgentMeta, views.AgentMetaPage, page, size))

    @get("/{entry_id:str}", operation_id="getAgentMeta", responses=_GET_ERRORS)
    async def get_agent_meta(
        self, services: ServicesDep, entry_id: EntryId
    ) -> AgentMetaResponse:
        return ok(await _entry(services, views.AgentMeta, "agent meta", entry_id))


class SchemeController(Controller):
    path = f"{PREFIX}/schemes"
    tags = ["catalog"]

    @post("/", status_code=CREATED, operation_id="createScheme", responses=_CREATE_ERRORS)
    async def create_scheme(
        self,
        services: ServicesDep,
        request: AnyRequest,
        data: Annotated[SchemeCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        operator: Operator = "anonymous",
    ) -> SchemeResponse:
        """Register a scheme; tasks store a snapshot of it when they are created."""
        body = await strict_body(request, SchemeCreate)
        check_json(body.config, "config")
        app = services.app
        await services.command(app.create_scheme, body.id, body.name, body.config, operator)
        return ok(await _entry(services, views.Scheme, "scheme", body.id), code=CREATED)

    @get("/", operation_id="listSchemes", responses=_LIST_ERRORS)
    async def list_schemes(
        self, services: ServicesDep, page: PageNo = 1, size: PageSize = 20
    ) -> SchemePageResponse:
        """Schemes in id order."""
        return ok(await _page(services, views.Scheme, views.SchemePage, page, size))

    @get("/{entry_id:str}", operation_id="getScheme", responses=_GET_ERRORS)
    async def get_scheme(self, services: ServicesDep, entry_id: EntryId) -> SchemeResponse:
        return ok(await _entry(services, views.Scheme, "scheme", entry_id))


class EnvInstanceController(Controller):
    path = f"{PREFIX}/env-instances"
    tags = ["catalog"]

    @post("/", status_code=CREATED, operation_id="createEnvInstance", responses=_CREATE_ERRORS)
    async def create_env_instance(
        self,
        services: ServicesDep,
        request: AnyRequest,
        data: Annotated[EnvInstanceCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        operator: Operator = "anonymous",
    ) -> EnvInstanceResponse:
        """Register an environment instance the Engine runs exercises in."""
        body = await strict_body(request, EnvInstanceCreate)
        check_json(body.config, "config")
        app = services.app
        await services.command(app.create_env_instance, body.id, body.name, body.config, operator)
        return ok(await _entry(services, views.EnvInstance, "env instance", body.id), code=CREATED)

    @get("/", operation_id="listEnvInstances", responses=_LIST_ERRORS)
    async def list_env_instances(
        self, services: ServicesDep, page: PageNo = 1, size: PageSize = 20
    ) -> EnvInstancePageResponse:
        """Environment instances in id order."""
        return ok(await _page(services, views.EnvInstance, views.EnvInstancePage, page, size))

    @get("/{entry_id:str}", operation_id="getEnvInstance", responses=_GET_ERRORS)
    async def get_env_instance(
        self, services: ServicesDep, entry_id: EntryId
    ) -> EnvInstanceResponse:
        return ok(await _entry(services, views.EnvInstance, "env instance", entry_id))


CATALOG_CONTROLLERS = [AgentMetaController, SchemeController, EnvInstanceController]
