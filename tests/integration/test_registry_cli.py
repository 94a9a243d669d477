"""`streamlearn registry ...` against a running registry, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format

from inference import model_config_pb2
from shared.clients.registry import RegistryClient
from streamlearn.v1 import registry_pb2


def _cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"STREAMLEARN_REGISTRY_ADDRESS": address, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", "registry", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_list_show_alias_promote_rollback_history(registry_client: RegistryClient) -> None:
    address = registry_client.address
    registry_client.create_model("ctr", "click-through")
    for i in range(3):
        registry_client.register(
            "ctr",
            f"onnx-{i}".encode(),
            lineage=registry_pb2.Lineage(
                stream="clicks", events_seen=1000 * (i + 1), metrics={"logloss": 0.5 - i / 10}
            ),
        )
    assert _cli(address, "alias", "ctr", "production", "1", "--expected", "0").returncode == 0
    assert _cli(address, "alias", "ctr", "candidate", "3").returncode == 0
    listed = _cli(address, "list", "ctr")
    assert listed.returncode == 0 and "logloss=0.3" in listed.stdout and "3,000" in listed.stdout
    assert "production" in _cli(address, "list").stdout
    shown = _cli(address, "show", "ctr", "--alias", "production")
    assert "ctr v1" in shown.stdout and "clicks" in shown.stdout
    promoted = _cli(address, "promote", "ctr", "--reason", "better logloss")
    assert promoted.returncode == 0 and "production 1 → 3" in promoted.stdout
    rolled = _cli(address, "rollback", "ctr", "--reason", "live drop")
    assert "production 3 → 1" in rolled.stdout
    history = _cli(address, "history", "ctr").stdout
    assert history.index("rollback") < history.index("promote")
    assert "live drop" in history


def test_a_lost_compare_and_set_and_an_unknown_model_are_one_line_errors(
    registry_client: RegistryClient,
) -> None:
    registry_client.create_model("m")
    registry_client.register("m", b"x")
    conflict = _cli(registry_client.address, "alias", "m", "production", "1", "--expected", "7")
    assert conflict.returncode == 1 and conflict.stderr.startswith("error: alias 'production'")
    missing = _cli(registry_client.address, "show", "ghost")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: model 'ghost' does not exist"


def test_export_triton_layout(registry_client: RegistryClient, tmp_path: Path) -> None:
    registry_client.create_model("demo")
    for i in range(3):
        registry_client.register("demo", f"model-bytes-{i}".encode())
    result = _cli(registry_client.address, "export-triton", "demo", str(tmp_path), "--last", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "3" / "model.onnx").read_bytes() == b"model-bytes-2"
    assert (tmp_path / "demo" / "2" / "model.onnx").read_bytes() == b"model-bytes-1"
    assert not (tmp_path / "demo" / "1").exists()
    config = text_format.Parse(
        (tmp_path / "demo" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == "demo" and config.backend == "onnxruntime"
    assert list(config.version_policy.specific.versions) == [2, 3]
