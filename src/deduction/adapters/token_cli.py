"""`deduction tokens ...`: issue an API token (printed once), list the tokens, revoke one."""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
from datetime import timedelta
from typing import IO

from psycopg import AsyncConnection

from deduction.adapters.postgres import eventsourcing_env
from deduction.application.service import CommandError, DeductionApp
from deduction.application.tokens import issue_token, revoke_token
from deduction.domain.times import rfc3339, utc_now
from deduction.domain.tokens import TokenRevokedError
from deduction.projections.runner import ProjectionRunner
from deduction.projections.tokens import TokenProjection

_DURATION = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def lifetime(text: str | None) -> timedelta | None:
    """`30d`, `12h`, `15m`, `45s`; None: the token does not expire."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"--expires {text!r}: write a number and s, m, h or d (e.g. 30d)")
    return timedelta(**{_UNITS[match["unit"]]: int(match["n"])})


def cli_operator() -> str:
    """Who runs the command, as the record keeps it (`cli:<OS user>`)."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


async def _catch_up(url: str) -> None:
    """The tokens table includes what was just saved (authentication reads it at once)."""
    runner = ProjectionRunner(url, [TokenProjection()])
    await runner.setup()
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await runner.catch_up(conn)


def _app(url: str) -> DeductionApp:
    return DeductionApp(env=eventsourcing_env(url))


async def create(url: str, name: str, roles: list[str], expires: str | None,
                 out: IO[str] = sys.stdout) -> int:  # fmt: skip
    try:
        span = lifetime(expires)
    except ValueError as e:
        print(f"deduction: {e}", file=sys.stderr)
        return 2
    app = _app(url)
    try:
        issued = await asyncio.to_thread(issue_token, app, name, roles, span, cli_operator())
    except CommandError as e:
        print(f"deduction: {e}", file=sys.stderr)
        return 2
    finally:
        app.close()
    await _catch_up(url)
    until = rfc3339(issued.expires_at) if issued.expires_at else "never"
    print(f"token {issued.token_id} for {name} ({', '.join(issued.roles)}), expires {until}",
          file=sys.stderr)  # fmt: skip
    print("it is shown once; send it as `Authorization: Bearer <token>`:", file=sys.stderr)
    out.write(issued.token + "\n")
    return 0


async def revoke(url: str, token_id: str) -> int:
    app = _app(url)
    try:
        await asyncio.to_thread(revoke_token, app, token_id, cli_operator())
    except (CommandError, TokenRevokedError) as e:
        print(f"deduction: {e}", file=sys.stderr)
        return 1
    finally:
        app.close()
    await _catch_up(url)
    print(f"token {token_id} revoked")
    return 0


async def list_tokens(url: str, out: IO[str] = sys.stdout) -> int:
    from psycopg_pool import AsyncConnectionPool

    from deduction.projections.tokens import PostgresTokenView

    await _catch_up(url)
    async with AsyncConnectionPool(url, min_size=1, max_size=1, open=False) as pool:
        rows = await PostgresTokenView(pool).all()
    now = utc_now()
    out.write(f"{'token_id':<14}{'name':<34}{'roles':<28}{'state':<10}expires\n")
    for r in rows:
        expired = r["expires_at"] is not None and r["expires_at"] <= now
        state = "revoked" if r["revoked_at"] else "expired" if expired else "active"
        until = rfc3339(r["expires_at"]) if r["expires_at"] else "never"
        out.write(f"{r['token_id']:<14}{r['name']:<34}{','.join(r['roles']):<28}{state:<10}"
                  f"{until}\n")  # fmt: skip
    return 0
