"""Services as child processes for benchmarks: started with env settings, ready on gRPC health."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from shared.grpc.probe import check
from shared.settings import TopicSettings


def topics_env(prefix: str, topics: TopicSettings) -> dict[str, str]:
    """The environment that gives a service (`prefix`, e.g. "TRAINER_") these topics."""
    return {f"{prefix}TOPICS__{k.upper()}": str(v) for k, v in topics.model_dump().items()}


@contextmanager
def service(
    module: str,
    env: dict[str, str],
    address: str,
    health_name: str,
    log: Path,
    timeout: float = 60.0,
    args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `python -m module *args` until the block ends; wait until `health_name` is SERVING."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not check(address, health_name, timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(30)


def rss_kib(pid: int) -> int:
    """A process's resident memory now (VmRSS, KiB)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])
