"""The api_tokens read model: who holds which roles until when, by token id (hashes only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from deduction.domain import ApiToken
from deduction.projections.base import EventRow, Projection, Row, fetch_all

DDL = [
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
        id uuid PRIMARY KEY,
        token_id varchar(12) NOT NULL UNIQUE,
        name varchar(32) NOT NULL,
        roles text[] NOT NULL,
        token_hash char(64) NOT NULL,
        expires_at timestamptz,
        issued_by varchar(64) NOT NULL,
        issued_at timestamptz NOT NULL,
        revoked_by varchar(64),
        revoked_at timestamptz
    )
    """,
]
COLUMNS = ("token_id", "name", "roles", "token_hash", "expires_at", "issued_by", "issued_at",
           "revoked_by", "revoked_at")  # fmt: skip


class TokenProjection(Projection):
    name = "tokens"
    ddl = DDL
    tables = ("api_tokens",)
    events = (ApiToken.Issued, ApiToken.Revoked)

    async def apply(self, conn: AsyncConnection[Any], events: list[EventRow]) -> None:
        async with conn.cursor() as cur:
            for e in events:
                s, key = e.state, UUID(int=e.originator_int)
                if e.name == "ApiToken.Issued":
                    expires = datetime.fromisoformat(s["expires_at"]) if s["expires_at"] else None
                    await cur.execute(
                        "INSERT INTO api_tokens (id, token_id, name, roles, token_hash,"
                        " expires_at, issued_by, issued_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (id) DO NOTHING",
                        (key, s["token_id"], s["name"], s["roles"], s["token_hash"], expires,
                         s["operator"], e.timestamp),
                    )  # fmt: skip
                else:
                    await cur.execute(
                        "UPDATE api_tokens SET revoked_by = %s, revoked_at = %s WHERE id = %s",
                        (s["operator"], e.timestamp, key),
                    )


class TokenView(Protocol):
    """What authentication and `deduction tokens list` read of the tokens."""

    async def find(self, token_id: str) -> Row | None: ...

    async def all(self) -> list[Row]: ...


class PostgresTokenView:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def find(self, token_id: str) -> Row | None:
        async with self._pool.connection() as conn:
            rows = await fetch_all(
                conn, f"SELECT {', '.join(COLUMNS)} FROM api_tokens WHERE token_id = %s", [token_id]
            )
        return rows[0] if rows else None

    async def all(self) -> list[Row]:
        async with self._pool.connection() as conn:
            return await fetch_all(
                conn, f"SELECT {', '.join(COLUMNS)} FROM api_tokens ORDER BY issued_at, token_id"
            )
