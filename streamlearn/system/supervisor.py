"""Keep the services running: start in order, restart what dies (with backoff), stop in reverse.

The supervisor is itself a background process (`python -m streamlearn.system`); what it
knows is written to a state file after every change, which `streamlearn status` reads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.grpc.probe import check
from streamlearn.system.plan import ServiceSpec

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long restarts without delay
MAX_LOG_BYTES = 64 * 1024 * 1024


@dataclass
class Child:
    """One supervised process and its history."""

    spec: ServiceSpec
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    since: float = 0.0  # wall-clock start of the current process
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float = 0.0  # monotonic time of a pending restart, 0 if none

    def describe(self) -> dict[str, Any]:
        """The state-file entry of this child."""
        running = self.process is not None and self.process.poll() is None
        return {
            "name": self.spec.name,
            "pid": self.process.pid if running and self.process else None,
            "state": "running" if running else "restarting",
            "address": self.spec.address,
            "health_name": self.spec.health_name,
            "since": self.since,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "log": str(self.log_path),
        }


class Supervisor:
    """Runs `specs` as child processes until told to stop."""

    def __init__(
        self,
        specs: list[ServiceSpec],
        state_file: Path,
        logs_dir: Path,
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        logs_dir.mkdir(parents=True, exist_ok=True)
        self._children = [Child(s, logs_dir / f"{s.name}.log") for s in specs]
        self._state_file = state_file
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._phase = "starting"

    def run(self, stop: threading.Event) -> None:
        """Start each child once the previous one is ready, then tend them until `stop`."""
        try:
            for child in self._children:
                if stop.is_set():
                    return
                self._start(child)
                self._wait_ready(child, stop)
            self._enter("running")
            while not stop.wait(0.5):
                for child in self._children:
                    self._tend(child)  # writes the state when something changed
        finally:
            self._enter("stopping")
            for child in reversed(self._children):
                self._stop(child)
            self._enter("stopped")

    def _start(self, child: Child) -> None:
        _rotate(child.log_path)
        with child.log_path.open("ab") as out:
            child.process = subprocess.Popen(
                child.spec.command,
                env=child.spec.environment(os.environ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        child.since, child.restart_at = time.time(), 0.0
        log.info("started", extra={"service": child.spec.name, "pid": child.process.pid})
        self._write_state()

    def _wait_ready(self, child: Child, stop: threading.Event) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            spec = child.spec
            if check(spec.address, spec.up_health, timeout=0.5, security=spec.probe):
                log.info("ready", extra={"service": child.spec.name})
                return
            self._tend(child)  # one that died while starting restarts, with backoff
            stop.wait(0.2)
        log.warning("not ready in time", extra={"service": child.spec.name})

    def _tend(self, child: Child) -> None:
        """Schedule a restart for a child that exited; perform one that is due."""
        if child.restart_at:
            if time.monotonic() >= child.restart_at:
                child.restarts += 1
                self._start(child)
            return
        if child.process is None or child.process.poll() is None:
            return
        child.last_exit = child.process.returncode
        ran = time.time() - child.since
        delay = 0.0 if ran > STABLE_AFTER_S else min(MAX_BACKOFF_S, 2.0 ** min(child.restarts, 5))
        child.restart_at = time.monotonic() + delay
        log.warning(
            "exited; restarting",
            extra={"service": child.spec.name, "code": child.last_exit, "in_s": delay},
        )
        self._write_state()

    def _stop(self, child: Child) -> None:
        process = child.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # each service drains on SIGTERM (the trainer checkpoints)
        try:
            code = process.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.info("stopped", extra={"service": child.spec.name, "code": code})

    def _enter(self, phase: str) -> None:
        self._phase = phase
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "phase": self._phase,
            "written": time.time(),
            "services": [c.describe() for c in self._children],
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self._state_file)


def read_state(state_file: Path) -> dict[str, Any] | None:
    """What the supervisor last wrote, or None."""
    try:
        loaded: dict[str, Any] = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def _rotate(path: Path) -> None:
    if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
        path.replace(path.with_suffix(".log.1"))
