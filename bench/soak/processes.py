"""The service's processes as a deployment runs them: each restarted when it exits (as
systemd's Restart=always would), and killed on purpose by the soak."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).with_name("deduction")
RESTART_SEC = 0.5  # what the supervisor waits before starting an exited process again


class Supervised:
    """One process, restarted RESTART_SEC after it exits unless it is held down."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path,
                 ready_mark: str | None = None) -> None:  # fmt: skip
        self.name, self.argv, self.env = name, argv, env
        self.log_path = logs / f"{name}.log"
        self.ready_mark = ready_mark
        self.proc: subprocess.Popen[bytes] | None = None
        self.held = False
        self.starts = 0
        self.killed = 0  # by the soak
        self.exits: list[int] = []  # on their own: exit codes
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            out = self.log_path.open("ab")
            self.proc = subprocess.Popen([str(BIN), *self.argv], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
            self.starts += 1
            self.held = False

    def kill(self, hold: bool = False) -> None:
        with self._lock:
            self.held = hold
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                self.killed += 1
            self.proc = None  # the supervisor starts it again unless held

    def terminate(self) -> None:
        with self._lock:
            self.held = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def marks(self) -> int:
        """How many times the ready mark appears in the log (a start that got going)."""
        if self.ready_mark is None or not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count(self.ready_mark)

    def check(self) -> None:
        """Restart the process if it exited on its own (not killed by the soak, not held)."""
        with self._lock:
            if self.held:
                return
            if self.proc is not None:
                code = self.proc.poll()
                if code is None:
                    return
                self.exits.append(code)
                self.proc = None
        time.sleep(RESTART_SEC)
        if not self.held and self.proc is None:
            self.start()


class Supervisor:
    """Checks every process a few times a second and restarts what exited."""

    def __init__(self, procs: list[Supervised]) -> None:
        self.procs = procs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for proc in self.procs:
                proc.check()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
