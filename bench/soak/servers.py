"""A PostgreSQL and a Redis server of their own, in a temporary directory on free ports, so
that they can be restarted (`pg_ctl restart -m immediate`, Redis `SHUTDOWN NOSAVE`) without
touching anyone else's."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found: PostgreSQL's server programs are needed")


class OwnRedis:
    """redis-server on a free port, no persistence: a restart loses everything it held."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=log, stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, as an operator's restart would, and wait for the process."""
        if self.proc is None:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                s.recv(64)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()


class OwnPostgres:
    """initdb + pg_ctl in a directory of its own, on a free port, trust authentication.

    As root, the server runs as the `postgres` system user (PostgreSQL refuses root), in a
    directory of its own under the system's temporary directory that the user can reach."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.user = _server_user()
        if workdir is None or self.user is not None:
            workdir = Path(tempfile.mkdtemp(prefix="deduction-pg-"))
            self._made = True
        else:
            self._made = False
        self.workdir = workdir
        self.pgdata = workdir / "pgdata"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, env=env,
                       user=self.user, cwd=self.workdir)  # fmt: skip

    def _ctl(self, *args: str) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.pgdata), "-l",
                  str(self.workdir / "postgres.log"), "-w", "-t", "60", *args)  # fmt: skip

    def start(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self.user is not None:
                shutil.chown(self.workdir, self.user, self.user)
            self._run(_pg_bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "trust",
                      "--no-sync", "-E", "UTF8")  # fmt: skip
            with (self.pgdata / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.workdir}'\nfsync = off\n"
                    "shared_buffers = 64MB\n"
                )
        self._ctl("start")

    def restart(self) -> None:
        """`pg_ctl restart -m immediate`: no checkpoint, every connection cut, crash recovery."""
        self._ctl("restart", "-m", "immediate")

    def stop(self, remove: bool = True) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._ctl("stop", "-m", "fast")
        if remove and self._made:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _server_user() -> str | None:
    """Who runs PostgreSQL: this user, or `postgres` when this is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise RuntimeError("running as root needs a `postgres` system user for the server") from e
    return "postgres"
