"""`deduction worker` processes started by a test, their logs in files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support.waits import wait_until

BIN = Path(sys.executable).with_name("deduction")


class Workers:
    """`deduction worker` processes sharing one queue; their logs go to files."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> int:
        n = len(self.procs)
        out = (self.logs / f"worker{n}.log").open("wb")
        proc = subprocess.Popen([str(BIN), "worker"], env={**self.env, **env}, stdout=out,
                                stderr=out)  # fmt: skip
        self.procs.append(proc)
        return n

    def log(self, n: int) -> str:
        return (self.logs / f"worker{n}.log").read_text(errors="replace")

    async def started(self, n: int) -> None:
        async def up() -> bool:
            assert self.procs[n].poll() is None, self.log(n)
            return "worker.started" in self.log(n)

        await wait_until(up, timeout=20, interval=0.1)

    def kill(self, n: int) -> None:
        self.procs[n].send_signal(signal.SIGKILL)
        self.procs[n].wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
