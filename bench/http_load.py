"""Load from a second process: wrk when installed, else a small aiohttp load generator."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    tool: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(
    args: list[str], env: dict[str, str], health_url: str, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process and wait until `health_url` answers 200.

    Its stderr goes to a file, not a pipe: a pipe nobody reads fills at 64 KiB and then blocks
    the server on its next log line (a worker logging failed jobs stopped ingesting)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(health_url, timeout=1) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health_url} did not answer within {timeout}s")
            time.sleep(0.1)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        keep = os.environ.get("BENCH_SERVER_LOGS")  # a folder: each server's stderr is kept there
        if keep:
            log.seek(0)
            (Path(keep) / f"server-{proc.pid}.log").write_bytes(
                " ".join(args).encode() + b"\n" + log.read()
            )
        log.close()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, connections: int = 8, seconds: int = 10, threads: int = 1) -> Load:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} error responses from {url}")
    return Load(rps, p50, p99, "wrk")


def python_load(url: str, connections: int = 8, seconds: int = 10) -> Load:
    """Fallback when wrk is missing: runs in a child process, like wrk would."""
    code = f"""
import asyncio, time, aiohttp, json
async def main():
    lat = []
    end = time.perf_counter() + {seconds}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={connections})) as s:
        async def worker():
            while time.perf_counter() < end:
                t = time.perf_counter()
                async with s.get({url!r}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t)
        await asyncio.gather(*(worker() for _ in range({connections})))
    print(json.dumps(lat))
asyncio.run(main())
"""
    import json

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    lat = sorted(json.loads(out))
    q = statistics.quantiles(lat, n=100)
    return Load(len(lat) / seconds, q[49] * 1000, q[98] * 1000, "python-aiohttp")


def load(url: str, connections: int = 8, seconds: int = 10) -> Load:
    if shutil.which("wrk"):
        return wrk(url, connections, seconds)
    return python_load(url, connections, seconds)


@dataclass(frozen=True)
class ApiServer:
    base: str
    process: subprocess.Popen[bytes]
    mode: str


@contextlib.contextmanager
def api_server(
    database_url: str, demo: bool = True, env_overrides: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    """`deduction serve` in a process of its own, as deployed (see api_process_env)."""
    from bench.common import api_process_env

    port = free_port()
    with api_process_env(database_url, port) as env:
        extra, mode = env.pop("_args"), env.pop("_mode")
        env.update(env_overrides or {})
        args = [sys.executable, "-m", "deduction", "serve", *(["--demo"] if demo else []), *extra]
        with server(args, env, f"http://127.0.0.1:{port}/health") as proc:
            yield ApiServer(f"http://127.0.0.1:{port}", proc, mode)
