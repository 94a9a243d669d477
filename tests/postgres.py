"""A throwaway PostgreSQL server for the tests: initdb in a temp dir, pg_ctl on a free port."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.net import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """A cluster with trust auth on 127.0.0.1 that a test can stop and start again.

    Stopping is `pg_ctl stop -m fast`: every client connection is cut, as in a failover.
    Starting again reuses the data and the port, so clients reconnect to the same URL.
    """

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="streamlearn-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://streamlearn@127.0.0.1:{self.port}"
        self._run(
            [_binary("initdb"), "-D", str(self.data / "db"), "-A", "trust", "-U", "streamlearn"]
        )

    def _run(self, command: list[str]) -> None:
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [
                _binary("pg_ctl"),
                "-D",
                str(self.data / "db"),
                "-w",
                "-l",
                str(self.data / "server.log"),
                "-o",
                options,
                "start",
            ]
        )

    def stop(self) -> None:
        """Stop the server, cutting every connection, and wait until it is down."""
        self._run([_binary("pg_ctl"), "-D", str(self.data / "db"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        """Stop the server if it runs and delete its data."""
        status = subprocess.run(
            _as_postgres([_binary("pg_ctl"), "-D", str(self.data / "db"), "status"]),
            capture_output=True,
            timeout=60,
        )
        if status.returncode == 0:
            self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """A started cluster a test may stop and start; removed at the end."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster with trust auth on 127.0.0.1; yield its base URL; stop and delete it."""
    with postgres_cluster() as server:
        yield server.url
