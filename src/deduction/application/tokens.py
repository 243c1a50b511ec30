"""Issuing and revoking API tokens; the token is shown once, the record keeps its hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from eventsourcing.application import AggregateNotFoundError

from deduction.application.service import CommandError, DeductionApp, NotFoundError
from deduction.domain.times import rfc3339, utc_now
from deduction.domain.tokens import GRANTS, ApiToken

PREFIX = "ddt_"
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,32}$")
TOKEN = re.compile(r"^ddt_(?P<token_id>[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


def token_hash(token: str) -> str:
    """SHA-256 of the whole token: the secret has 256 random bits, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The public id inside a token of this service's form; None for anything else."""
    match = TOKEN.fullmatch(token)
    return match["token_id"] if match else None


def same_hash(token: str, stored: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored)


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    token: str
    """Shown once: only its hash is stored."""
    name: str
    roles: list[str]
    expires_at: datetime | None
    position: int


def issue_token(
    app: DeductionApp,
    name: str,
    roles: list[str],
    lifetime: timedelta | None,
    operator: str,
    now: datetime | None = None,
) -> IssuedToken:
    if not NAME.fullmatch(name):
        raise CommandError("a token name is 1..32 of letters, digits and . _ @ -")
    unknown = sorted(set(roles) - set(GRANTS))
    if not roles or unknown:
        raise CommandError(f"roles must be among {', '.join(GRANTS)} (got {unknown or 'none'})")
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    expires = (now or utc_now()) + lifetime if lifetime is not None else None
    record = ApiToken(token_id, name, sorted(set(roles)), token_hash(token),
                      rfc3339(expires) if expires else None, operator)  # fmt: skip
    position = max(r.notification.id for r in app.save(record))
    return IssuedToken(token_id, token, name, record.roles, expires, position)


def revoke_token(app: DeductionApp, token_id: str, operator: str) -> int:
    try:
        record: object = app.repository.get(ApiToken.create_id(token_id))
    except AggregateNotFoundError:
        raise NotFoundError("token", token_id) from None
    if not isinstance(record, ApiToken):
        raise NotFoundError("token", token_id)
    record.revoke(operator)
    return max(r.notification.id for r in app.save(record))
