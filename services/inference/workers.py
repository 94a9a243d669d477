"""`INFERENCE_WORKERS=N`: N inference processes serving one gRPC port (SO_REUSEPORT).

Python gRPC serves a process's requests under one interpreter lock, so one process uses
about one core however many threads it has. With N workers, this process only supervises:
it starts N copies of the service (`python -m services.inference` with
`INFERENCE_WORKERS=1`), each binding the same port with SO_REUSEPORT so the kernel spreads
connections over them, each following the registry and loading its versions itself.
Worker i exports Prometheus metrics on `metrics_port + i` (none when `metrics_port` is 0);
each worker's metrics and `ModelStatistics` count its own requests only. A worker listens
once its versions are loaded, so no connection reaches a worker that cannot answer yet.

SIGTERM is passed on to every worker, which drains as a single process does; the
supervisor waits for them. A worker that exits on its own takes the others down and the
supervisor exits 1, so the process manager above (streamlearn's supervisor, Kubernetes)
restarts the whole set: a port half served by a dead worker's share of connections
would fail requests.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from services.inference.settings import InferenceSettings
from shared.errors import ConfigError, StreamlearnError

log = logging.getLogger(__name__)

POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies


class WorkerDied(StreamlearnError):
    """A worker process exited while the set was serving."""


def worker_environment(
    settings: InferenceSettings, index: int, base: Mapping[str, str]
) -> dict[str, str]:
    """The environment of worker `index`: one process, its own metrics port."""
    metrics = settings.metrics_port + index if settings.metrics_port else 0
    return {
        **base,
        "INFERENCE_WORKERS": "1",
        "INFERENCE_REUSE_PORT": "true",
        "INFERENCE_METRICS_PORT": str(metrics),
    }


def check(settings: InferenceSettings) -> None:
    """Refuse worker settings that cannot share one port.

    Raises:
        ConfigError: several workers on port 0 (each would get a port of its own), or
            metrics ports past 65535.

    """
    if settings.workers > 1 and settings.grpc_port == 0:
        raise ConfigError("INFERENCE_WORKERS > 1 needs a fixed INFERENCE_GRPC_PORT, not 0")
    if settings.metrics_port and settings.metrics_port + settings.workers - 1 > 65535:
        raise ConfigError("INFERENCE_METRICS_PORT + INFERENCE_WORKERS - 1 exceeds 65535")


def supervise(settings: InferenceSettings, stop: threading.Event) -> None:
    """Run `settings.workers` worker processes until `stop`, then stop them (they drain).

    Raises:
        WorkerDied: a worker exited before `stop` (the others are stopped first).

    """
    check(settings)
    command = [sys.executable, "-m", "services.inference"]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(settings.workers):
            env = worker_environment(settings, i, os.environ)
            workers.append(subprocess.Popen(command, env=env, preexec_fn=_end_with_parent))
        log.info("inference workers started", extra={"pids": [w.pid for w in workers]})
        while not stop.wait(POLL_S):
            dead = [w for w in workers if w.poll() is not None]
            if dead:
                raise WorkerDied(f"inference worker {dead[0].pid} exited with {dead[0].returncode}")
    finally:
        _stop_all(workers, settings.drain_delay_s + settings.drain_grace_s + 5.0)


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies, even by SIGKILL.

    Otherwise a killed supervisor would leave its workers serving the port, and the set
    started in its place would share it with them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_all(workers: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM every live worker, wait up to `timeout_s`, then SIGKILL the rest."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("inference worker did not drain in time", extra={"pid": worker.pid})
            worker.kill()
            worker.wait()
