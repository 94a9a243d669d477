"""Which heavy libraries each light entry point imports: none (a deterministic check).

Each command runs in a fresh interpreter, exactly as the `streamlearn` script runs it; at
exit the interpreter writes which of the heavy modules ended up in `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.net import free_port

HEAVY = ("torch", "numba", "onnxruntime", "onnx", "matplotlib", "faust", "river")
# What `status` needs only to ask running services: with nothing running it loads none.
CLIENTS = ("grpc", "confluent_kafka", "pydantic", "pydantic_settings", "numpy", "rich")
WATCHED = HEAVY + CLIENTS

# Runs `app()` like the console script and records the heavy modules loaded when it exits.
_CLI = """
import atexit, json, sys
out, *args = sys.argv[1:]
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"heavy": sorted(m for m in %r if m in sys.modules)})))
sys.argv = ["streamlearn", *args]
from streamlearn.cli.main import app
app()
""" % (WATCHED,)  # noqa: UP031 - the snippet is itself Python with braces

# What `python -m streamlearn.system` loads before its loop: settings, plan, supervisor.
_SUPERVISOR = """
import json, sys
from pathlib import Path
from streamlearn.cli.settings import CliSettings
from streamlearn.system.__main__ import main
from streamlearn.system.plan import Layout, local_plan
from streamlearn.system.supervisor import Supervisor
settings = CliSettings()
layout = Layout(settings.state_dir)
Supervisor(local_plan(settings.state_dir, settings.kafka()), layout.state_file, layout.logs_dir)
open(sys.argv[1], "w").write(json.dumps(
    {"heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)  # noqa: UP031


def _run(tmp_path: Path, code: str, *args: str, **env: str) -> tuple[int, list[str], str]:
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"STREAMLEARN_STATE_DIR": str(tmp_path / "state")} | env,
        check=False,
    )
    heavy: list[str] = json.loads(out.read_text())["heavy"]
    return result.returncode, heavy, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["--version", "--verbose"], 0),
        (["status"], 3),  # nothing runs in this state directory
        (["status", "--json"], 3),
        (["down"], 0),
        (["kafka", "status"], 3),
        (["registry", "list"], 1),  # no registry at the address: one clear line
        (["stream", "list"], 1),  # no broker at the address: one clear line
        (["registry", "--help"], 0),
        (["produce", "--help"], 0),
        (["replay", "backtest", "--help"], 0),
        (["demo", "--help"], 0),
        (["up", "--help"], 0),
        (["doctor"], 1),  # nothing runs: the broker and service checks fail
        (["bench", "--help"], 0),
    ],
)
def test_light_commands_import_no_heavy_library(tmp_path: Path, args: list[str], code: int) -> None:
    returncode, heavy, output = _run(
        tmp_path,
        _CLI,
        *args,
        STREAMLEARN_REGISTRY_ADDRESS=f"127.0.0.1:{free_port()}",
        STREAMLEARN_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    assert returncode == code, output
    heavy = [m for m in heavy if m in HEAVY]
    assert heavy == [], f"`streamlearn {' '.join(args)}` imported {heavy}"


@pytest.mark.parametrize("args", [["status"], ["status", "--json"]])
def test_status_with_nothing_running_loads_no_client_library(
    tmp_path: Path, args: list[str]
) -> None:
    """Answered from pid files: no gRPC, Kafka client, pydantic, numpy or rich."""
    returncode, loaded, output = _run(tmp_path, _CLI, *args)
    assert returncode == 3, output
    assert "not running" in output or '"phase": "stopped"' in output
    assert loaded == [], f"`streamlearn {' '.join(args)}` imported {loaded}"


def test_the_check_sees_a_client_library(tmp_path: Path) -> None:
    """`registry list` asks a registry over gRPC: the probe finds grpc (so [] above means none)."""
    _, loaded, _ = _run(
        tmp_path, _CLI, "registry", "list", STREAMLEARN_REGISTRY_ADDRESS=f"127.0.0.1:{free_port()}"
    )
    assert "grpc" in loaded


def test_the_supervisor_imports_no_heavy_library(tmp_path: Path) -> None:
    _, heavy, output = _run(tmp_path, _SUPERVISOR)
    assert heavy == [], output


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    """The same probe on the trainer's core finds torch: an empty list above means none."""
    _, heavy, _ = _run(tmp_path, "import sys, json; import services.trainer.app;" + _SUPERVISOR)
    assert "torch" in heavy
