"""Who is calling: API tokens and JWTs become a principal; a guard on every route checks its role."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import jwt
import structlog
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.params import HeaderParameter
from litestar.types import ASGIApp, Receive, Scope, Send

from deduction.adapters.http.schemas import OPERATOR, InputError
from deduction.application.tokens import same_hash, token_id_of
from deduction.config import Settings, auth_enabled
from deduction.domain.text import MAX_SHORT_NAME_CHARS
from deduction.domain.times import utc_now
from deduction.domain.tokens import GRANTS, ON_BEHALF, ROLES
from deduction.projections.tokens import TokenView

log = structlog.get_logger(__name__)

# The rule each handler carries in its `opt`: the role it needs (None: public).
PUBLIC: dict[str, Any] = {"role": None}
READ: dict[str, Any] = {"role": "viewer"}
READ_AS_OF: dict[str, Any] = {"role": "viewer", "as_of_role": "auditor"}
COMMAND: dict[str, Any] = {"role": "operator"}
AUDIT: dict[str, Any] = {"role": "auditor"}
ADMIN: dict[str, Any] = {"role": "admin"}
AS_OF_PARAMS = ("as_of", "as_of_position")
DOCS_PATH = "/schema"
BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or, with authentication off, everyone)."""

    name: str
    roles: frozenset[str]
    kind: str  # "token", "jwt" or "open"

    def may(self, role: str) -> bool:
        if "admin" in self.roles or role in self.roles:
            return True
        return role == "viewer" and bool(self.roles & set(ROLES))

    @property
    def on_behalf(self) -> bool:
        return ON_BEHALF in self.roles


OPEN = Principal("anonymous", frozenset(GRANTS), "open")


class Authenticator:
    """Turns the Authorization header into a principal, or a reason why not."""

    def __init__(self, settings: Settings, tokens: TokenView) -> None:
        self.enabled = auth_enabled(settings)
        self._tokens, self._settings = tokens, settings
        self._secret = settings.auth_jwt_secret
        self._jwks = (
            jwt.PyJWKClient(settings.auth_jwt_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.auth_jwt_jwks_url
            else None
        )

    async def identify(self, header: str | None) -> tuple[Principal | None, str]:
        if not self.enabled:
            return OPEN, ""
        if not header:
            return None, "authentication required: send Authorization: Bearer <token>"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "the Authorization header must be `Bearer <token>`"
        token = token.strip()
        if token_id_of(token) is not None:
            return await self._api_token(token)
        if self._secret or self._jwks:
            return await self._jwt(token)
        return None, "the bearer token is not valid"

    async def _api_token(self, token: str) -> tuple[Principal | None, str]:
        token_id = token_id_of(token) or ""
        row = await self._tokens.find(token_id)
        if row is None or not same_hash(token, row["token_hash"]):
            return None, "the bearer token is not valid"
        if row["revoked_at"] is not None:
            return None, f"the token {token_id} was revoked"
        expires: datetime | None = row["expires_at"]
        if expires is not None and expires <= utc_now():
            return None, f"the token {token_id} expired"
        return Principal(row["name"], frozenset(row["roles"]), "token"), ""

    async def _jwt(self, token: str) -> tuple[Principal | None, str]:
        s = self._settings
        try:
            if self._jwks is not None:
                key: Any = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
                algorithms = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
            else:
                key, algorithms = self._secret, ["HS256"]
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=s.auth_jwt_audience,
                issuer=s.auth_jwt_issuer, options={"require": ["exp", "sub", "iss", "aud"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            return None, "the JWT expired"
        except jwt.PyJWKClientError as e:
            log.warning("auth.jwks_failed", error=str(e))
            return None, "the JWT's signing key could not be found"
        except jwt.InvalidTokenError as e:
            return None, f"the JWT is not valid: {e}"
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> tuple[Principal | None, str]:
        name = str(claims["sub"])
        if not 1 <= len(name) <= MAX_SHORT_NAME_CHARS or not name.isprintable():
            return None, f"the JWT's subject must be 1..{MAX_SHORT_NAME_CHARS} printable characters"
        raw = claims.get(self._settings.auth_jwt_role_claim)
        values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = frozenset(str(v) for v in values) & set(GRANTS)
        return Principal(name, roles, "jwt"), ""


class AuthenticationMiddleware:
    """Sets the principal on every request, then checks the route's rule (`authorize`).

    One step in place of a middleware and a Litestar guard: Litestar calls a guard with a copy
    of its route handler on every request (measured: 3 % of a detail read's CPU)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            authenticator: Authenticator = connection.app.state.auth
            principal, reason = (
                await authenticator.identify(connection.headers.get("authorization"))
                if authenticator.enabled
                else (OPEN, "")  # what identify answers; the headers are not parsed
            )
            if principal is not None and principal.kind != "open":
                structlog.contextvars.bind_contextvars(principal=principal.name)
            scope["user"] = principal
            scope["auth"] = reason
            await authorize(connection, scope["route_handler"])
        await self.app(scope, receive, send)


def required_role(connection: ASGIConnection[Any, Any, Any, Any], opt: dict[str, Any]) -> Any:
    """The role a request needs: the handler's rule, raised to `as_of_role` for an as-of read."""
    role = opt.get("role")
    if opt.get("as_of_role") and any(p in connection.query_params for p in AS_OF_PARAMS):
        role = opt["as_of_role"]
    return role


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The guard of every route: a route without a rule is refused (fail closed). Async, so
    Litestar runs it on the event loop (a sync guard costs a thread hop per request)."""
    if connection.scope.get("method") == "OPTIONS":
        return
    if "role" not in handler.opt:
        if connection.scope["path"].startswith(DOCS_PATH):
            return  # the OpenAPI document and its viewers are public
        raise PermissionDeniedException("no access rule is declared for this route")
    role = required_role(connection, handler.opt)
    if role is None:
        return
    principal: Principal | None = connection.scope.get("user")
    if principal is None:
        raise NotAuthorizedException(connection.scope.get("auth") or "not authenticated",
                                     headers=BEARER)  # fmt: skip
    if not principal.may(role):
        held = ", ".join(sorted(principal.roles & set(ROLES))) or "no role"
        raise PermissionDeniedException(
            f"this needs the {role} role (or admin); {principal.name} has {held}"
        )


XOperator = Annotated[
    str | None,
    HeaderParameter(
        name="X-Operator",
        min_length=1,
        max_length=MAX_SHORT_NAME_CHARS,
        pattern=OPERATOR,
        description="whom the command is sent for; recorded only for principals allowed to act"
        " on behalf of others (as `<X-Operator> via <principal>`), ignored for others; with"
        " authentication off, recorded as given. Printable ASCII, "
        f"<= {MAX_SHORT_NAME_CHARS}",
    ),
]


def acting_operator(principal: Principal | None, x_operator: str | None) -> str:
    """The operator recorded in the events: the authenticated principal, never a claim."""
    if principal is None or principal.kind == "open":
        return x_operator or "anonymous"
    if x_operator is None or not principal.on_behalf:
        if x_operator is not None and x_operator != principal.name:
            log.info("auth.x_operator_ignored", principal=principal.name, x_operator=x_operator)
        return principal.name
    recorded = f"{x_operator} via {principal.name}"
    if len(recorded) > MAX_SHORT_NAME_CHARS:
        room = MAX_SHORT_NAME_CHARS - len(f" via {principal.name}")
        raise InputError("X-Operator", f"X-Operator may be at most {room} characters for"
                                       f" {principal.name} (recorded as '<X-Operator> via"
                                       f" {principal.name}', at most {MAX_SHORT_NAME_CHARS})")  # fmt: skip
    return recorded


async def provide_operator(request: Request[Any, Any, Any], x_operator: XOperator = None) -> str:
    return acting_operator(request.scope.get("user"), x_operator)
