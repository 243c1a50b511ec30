"""API tokens: issued to a named principal with roles, revoked; only the secret's hash is kept."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

ROLES = ("viewer", "operator", "auditor", "admin")
"""What a principal may do; `admin` may do everything."""
ON_BEHALF = "on_behalf"
"""Not a role of its own: the principal may name, in X-Operator, whom it acts for."""
GRANTS = (*ROLES, ON_BEHALF)


class TokenRevokedError(ValueError):
    """The token was revoked already."""


class ApiToken(Aggregate):
    """A bearer token: `ddt_<token_id>_<secret>`; the event keeps the SHA-256 of it, never it."""

    class Issued(Aggregate.Created):
        token_id: str
        name: str
        roles: list[str]
        token_hash: str
        expires_at: str | None
        operator: str

    class Revoked(Aggregate.Event):
        operator: str

    @staticmethod
    def create_id(token_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"deduction:api_token:{token_id}")

    @event(Issued)
    def __init__(
        self,
        token_id: str,
        name: str,
        roles: list[str],
        token_hash: str,
        expires_at: str | None,
        operator: str,
    ) -> None:
        self.token_id, self.name, self.roles = token_id, name, roles
        self.token_hash, self.expires_at, self.revoked = token_hash, expires_at, False

    def revoke(self, operator: str) -> None:
        if self.revoked:
            raise TokenRevokedError(f"token {self.token_id} is revoked already")
        self._revoked(operator)

    @event(Revoked)
    def _revoked(self, operator: str) -> None:
        self.revoked = True
