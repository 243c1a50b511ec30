"""Every connection a process holds to PostgreSQL probes a silent peer within about a minute."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict

from deduction.adapters.postgres import KEEPALIVES
from tests.support.api import TASK, Api


def sockets_to(port: int) -> Iterator[socket.socket]:
    """This process's TCP sockets connected to `port` (duplicates: close them)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getpeername()[1] == port:
                yield sock
                continue
        except OSError:
            pass
        sock.close()


async def test_every_postgres_connection_of_the_api_has_tcp_keepalives(
    api: Api, db_url: str
) -> None:
    """The event store pool, the read pool, the projection runner (its followers and its
    LISTEN), the audit chain and the stream hub's LISTEN: keepalive on, first probe after 30 s
    of silence, so a LISTEN waiting on a dead server or network does not wait for ever."""
    await api.call("GET", f"{TASK}/list")  # the read pool is in use
    port = int(conninfo_to_dict(db_url).get("port") or 5432)
    if str(conninfo_to_dict(db_url).get("host", "")).startswith("/"):
        pytest.skip("keepalives are TCP's: the embedded server is reached over a Unix socket")

    found = list(sockets_to(port))
    try:
        settings = [(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                     s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                     s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)) for s in found]  # fmt: skip
    finally:
        for s in found:
            s.close()

    listeners = 1 + 1 + 1  # the runner's LISTEN, the chain's, the stream hub's
    assert len(found) >= listeners + len(api.services.runner.projections)  # type: ignore[attr-defined]
    expected = (1, KEEPALIVES["keepalives_idle"], KEEPALIVES["keepalives_interval"])
    assert set(settings) == {expected}, settings
