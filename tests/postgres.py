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


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster with trust auth on 127.0.0.1; yield its base URL; stop and delete it."""
    data = Path(tempfile.mkdtemp(prefix="streamlearn-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def run(command: list[str]) -> None:
        subprocess.run(_as_postgres(command), check=True, capture_output=True, timeout=120)

    run([_binary("initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "streamlearn"])
    run(
        [
            _binary("pg_ctl"),
            "-D",
            str(data / "db"),
            "-w",
            "-l",
            str(data / "server.log"),
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ]
    )
    try:
        yield f"postgresql://streamlearn@127.0.0.1:{port}"
    finally:
        run([_binary("pg_ctl"), "-D", str(data / "db"), "-m", "fast", "-w", "stop"])
        shutil.rmtree(data, ignore_errors=True)
