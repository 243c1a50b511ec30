"""Catalog controllers: agent metas, schemes and environment instances that tasks refer to."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import BodyKwarg

from deduction.adapters.http import auth, views
from deduction.adapters.http.bodies import strict_body
from deduction.adapters.http.deps import ActorDep, ReadsDep, ServicesDep
from deduction.adapters.http.envelope import ok
from deduction.adapters.http.errors import documented
from deduction.adapters.http.params import EntryId, PageNo, PageSize
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
from deduction.projections.catalog import CatalogView, Kind

V = TypeVar("V", bound=msgspec.Struct)
P = TypeVar("P", bound=msgspec.Struct)
AnyRequest = Request[Any, Any, Any]
PREFIX = "/api/v1/catalog"
CREATED = 201
_CREATE_ERRORS = documented(400, 409, 413, 422, 503)
_GET_ERRORS = documented(404, 422, 503)
_LIST_ERRORS = documented(422, 503)


# Each response Struct, the catalog kind it shows, and its name in a 404.
KINDS: dict[type[msgspec.Struct], tuple[Kind, str]] = {
    views.AgentMeta: ("agent_meta", "agent meta"),
    views.Scheme: ("scheme", "scheme"),
    views.EnvInstance: ("env_instance", "env instance"),
}


async def _page(catalog: CatalogView, view: type[V], page_view: type[P], page: int, size: int) -> P:
    total, rows = await catalog.page(KINDS[view][0], page, size)
    items = [views.from_row(view, r) for r in rows]
    return page_view(total=total, page=page, size=size, items=items)


async def _entry(catalog: CatalogView, view: type[V], entry_id: int) -> V:
    kind, what = KINDS[view]
    row = await catalog.entry(kind, entry_id)
    if row is None:
        raise NotFoundError(what, entry_id)
    return views.from_row(view, row)


class AgentMetaController(Controller):
    path = f"{PREFIX}/agent-metas"
    tags = ("catalog",)

    @post(
        "/",
        status_code=CREATED,
        operation_id="createAgentMeta",
        responses=_CREATE_ERRORS,
        opt=auth.ADMIN,
    )
    async def create_agent_meta(
        self,
        services: ServicesDep,
        reads: ReadsDep,
        request: AnyRequest,
        data: Annotated[AgentMetaCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        actor: ActorDep,
    ) -> AgentMetaResponse:
        """Register an agent the Engine can load, under the caller's id (409 if taken)."""
        body = await strict_body(request, AgentMetaCreate)
        app = services.app
        await services.command(
            app.create_agent_meta, body.id, body.name, body.load, body.description, actor
        )
        entry = await _entry(reads.catalog, views.AgentMeta, body.id)
        return ok(entry, code=CREATED)

    @get("/", operation_id="listAgentMetas", responses=_LIST_ERRORS, opt=auth.READ)
    async def list_agent_metas(
        self, reads: ReadsDep, page: PageNo = 1, size: PageSize = 20
    ) -> AgentMetaPageResponse:
        """Agent metas in id order."""
        return ok(await _page(reads.catalog, views.AgentMeta, views.AgentMetaPage, page, size))

    @get("/{entry_id:str}", operation_id="getAgentMeta", responses=_GET_ERRORS, opt=auth.READ)
    async def get_agent_meta(self, reads: ReadsDep, entry_id: EntryId) -> AgentMetaResponse:
        return ok(await _entry(reads.catalog, views.AgentMeta, entry_id))


class SchemeController(Controller):
    path = f"{PREFIX}/schemes"
    tags = ("catalog",)

    @post(
        "/",
        status_code=CREATED,
        operation_id="createScheme",
        responses=_CREATE_ERRORS,
        opt=auth.ADMIN,
    )
    async def create_scheme(
        self,
        services: ServicesDep,
        reads: ReadsDep,
        request: AnyRequest,
        data: Annotated[SchemeCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        actor: ActorDep,
    ) -> SchemeResponse:
        """Register a scheme; tasks store a snapshot of it when they are created."""
        body = await strict_body(request, SchemeCreate)
        check_json(body.config, "config")
        app = services.app
        await services.command(app.create_scheme, body.id, body.name, body.config, actor)
        return ok(await _entry(reads.catalog, views.Scheme, body.id), code=CREATED)

    @get("/", operation_id="listSchemes", responses=_LIST_ERRORS, opt=auth.READ)
    async def list_schemes(
        self, reads: ReadsDep, page: PageNo = 1, size: PageSize = 20
    ) -> SchemePageResponse:
        """Schemes in id order."""
        return ok(await _page(reads.catalog, views.Scheme, views.SchemePage, page, size))

    @get("/{entry_id:str}", operation_id="getScheme", responses=_GET_ERRORS, opt=auth.READ)
    async def get_scheme(self, reads: ReadsDep, entry_id: EntryId) -> SchemeResponse:
        return ok(await _entry(reads.catalog, views.Scheme, entry_id))


class EnvInstanceController(Controller):
    path = f"{PREFIX}/env-instances"
    tags = ("catalog",)

    @post(
        "/",
        status_code=CREATED,
        operation_id="createEnvInstance",
        responses=_CREATE_ERRORS,
        opt=auth.ADMIN,
    )
    async def create_env_instance(
        self,
        services: ServicesDep,
        reads: ReadsDep,
        request: AnyRequest,
        data: Annotated[EnvInstanceCreate, BodyKwarg(media_type=RequestEncodingType.JSON)],
        actor: ActorDep,
    ) -> EnvInstanceResponse:
        """Register an environment instance the Engine runs exercises in."""
        body = await strict_body(request, EnvInstanceCreate)
        check_json(body.config, "config")
        app = services.app
        await services.command(app.create_env_instance, body.id, body.name, body.config, actor)
        return ok(await _entry(reads.catalog, views.EnvInstance, body.id), code=CREATED)

    @get("/", operation_id="listEnvInstances", responses=_LIST_ERRORS, opt=auth.READ)
    async def list_env_instances(
        self, reads: ReadsDep, page: PageNo = 1, size: PageSize = 20
    ) -> EnvInstancePageResponse:
        """Environment instances in id order."""
        return ok(await _page(reads.catalog, views.EnvInstance, views.EnvInstancePage, page, size))

    @get("/{entry_id:str}", operation_id="getEnvInstance", responses=_GET_ERRORS, opt=auth.READ)
    async def get_env_instance(self, reads: ReadsDep, entry_id: EntryId) -> EnvInstanceResponse:
        return ok(await _entry(reads.catalog, views.EnvInstance, entry_id))


CATALOG_CONTROLLERS = [AgentMetaController, SchemeController, EnvInstanceController]
