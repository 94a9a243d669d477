"""Start-up of the command line and the supervisor beside a bare interpreter, in one run.

- time: `streamlearn --help`, `--version` and `status` (an empty state directory: nothing
  runs) against `python -c pass`; rounds alternate, medians reported, each a fresh process.
- memory: the resident set of what `python -m streamlearn.system` loads before its
  loop (settings, the service plan, the supervisor) against `python -c pass`.

The ratio is bare / command (below 1: slower than an interpreter that does nothing); the
figure that matters is the difference, value - baseline.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.core import BenchContext, Figure

_BARE = "pass"
_CLI = "import sys; from streamlearn.cli.main import app; sys.argv[0] = 'streamlearn'; app()"
# Resident memory now (VmRSS, KiB): ru_maxrss would also count the parent's pages before exec.
_RSS = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
_SUPERVISOR = """
from streamlearn.cli.settings import CliSettings
from streamlearn.system.__main__ import main
from streamlearn.system.plan import Layout, local_plan
from streamlearn.system.supervisor import Supervisor
settings = CliSettings()
layout = Layout(settings.state_dir)
Supervisor(local_plan(settings.state_dir, settings.kafka()), layout.state_file, layout.logs_dir)
"""
COMMANDS = (["--help"], ["--version"], ["status"])


def run(ctx: BenchContext) -> list[Figure]:
    """Median wall time of each command and of a bare interpreter; memory of both."""
    rounds = max(3, ctx.count(10))
    with tempfile.TemporaryDirectory() as state:
        env = os.environ | {"STREAMLEARN_STATE_DIR": state}
        times: dict[str, list[float]] = {"bare": [], **{" ".join(c): [] for c in COMMANDS}}
        for _ in range(rounds):
            times["bare"].append(_seconds([_BARE], env))
            for command in COMMANDS:
                times[" ".join(command)].append(_seconds([_CLI, *command], env))
        supervisor_kib = _number([_SUPERVISOR + _RSS], env)
        bare_kib = _number([_RSS], env)
    bare_ms = statistics.median(times["bare"]) * 1e3
    figures = [
        Figure(
            f"streamlearn {name} (median of {rounds})",
            statistics.median(samples) * 1e3,
            "ms",
            "python -c pass",
            bare_ms,
            higher_is_better=False,
        )
        for name, samples in times.items()
        if name != "bare"
    ]
    figures.append(
        Figure(
            "supervisor RSS",
            supervisor_kib / 1024,
            "MiB",
            "python -c pass",
            bare_kib / 1024,
            higher_is_better=False,
        )
    )
    return figures


def _seconds(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )
    return time.perf_counter() - started


def _number(args: list[str], env: dict[str, str]) -> float:
    """The number the child prints last (its resident memory in KiB)."""
    done = subprocess.run(
        [sys.executable, "-c", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0][:40]!r} failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])
