"""`streamlearn doctor`: each prerequisite on its own line, a fix for each failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamlearn.cli import doctor as doctor_command
from streamlearn.cli.main import _typer_app
from streamlearn.system import doctor
from streamlearn.system.doctor import Check


def _doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"STREAMLEARN_STATE_DIR": str(tmp_path / "state")} | env,
        check=False,
    )


def _line(output: str, name: str) -> str:
    """The report line of check `name` (after the 4-character mark and a space)."""
    [line] = [ln for ln in output.splitlines() if ln[5:].startswith(name + " ")]
    return line


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_java_missing_from_path_fails_with_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _doctor(tmp_path, PATH=str(empty))
    assert result.returncode == 1
    line = _line(result.stdout, "java")
    assert line.startswith("FAIL")
    assert "not found on PATH" in line
    assert "install a Java 17+ runtime" in line
    assert _line(result.stdout, "python").startswith("ok")


def test_a_taken_service_port_is_named_with_the_variable_that_moves_it(
    tmp_path: Path, taken_port: int
) -> None:
    result = _doctor(tmp_path, REGISTRY_GRPC_PORT=str(taken_port))
    assert result.returncode == 1
    line = _line(result.stdout, "registry port")
    assert line.startswith("FAIL")
    assert f"0.0.0.0:{taken_port} is taken by another process" in line
    assert "REGISTRY_GRPC_PORT" in line
    assert _line(result.stdout, "ingestion port").startswith("ok")


def test_a_taken_broker_port_is_named(tmp_path: Path, taken_port: int) -> None:
    result = _doctor(tmp_path, STREAMLEARN_KAFKA_PORT=str(taken_port))
    line = _line(result.stdout, "kafka port")
    assert line.startswith("FAIL")
    assert "STREAMLEARN_KAFKA_PORT" in line


def test_exit_code_is_zero_only_when_every_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    passing = [Check("a", True, "fine"), Check("b", True, "fine")]
    monkeypatch.setattr(doctor_command, "run_checks", lambda _settings: passing)
    assert CliRunner().invoke(_typer_app, ["doctor"]).exit_code == 0
    failing = [*passing, Check("c", False, "broken", "mend it")]
    monkeypatch.setattr(doctor_command, "run_checks", lambda _settings: failing)
    result = CliRunner().invoke(_typer_app, ["doctor"])
    assert result.exit_code == 1
    assert "broken -> mend it" in result.output


def _fake_java(tmp_path: Path, version: str) -> str:
    script = tmp_path / "java"
    script.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-01' >&2\n")
    script.chmod(0o755)
    return str(script)


def test_an_old_java_fails_and_a_current_one_passes(tmp_path: Path) -> None:
    old = doctor.java(_fake_java(tmp_path, "1.8.0_402"))
    assert not old.ok
    assert "Java 8" in old.detail
    assert doctor.java(_fake_java(tmp_path, "21.0.2")).ok


def test_low_disk_space_fails(tmp_path: Path) -> None:
    assert doctor.disk_space(tmp_path / "missing" / "state", minimum=1).ok
    low = doctor.disk_space(tmp_path, minimum=2**62)
    assert not low.ok
    assert "STREAMLEARN_STATE_DIR" in low.fix


def test_no_virtualenv_and_another_clone_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not doctor.virtualenv(prefix="/usr", base="/usr").ok
    other = tmp_path / "other-clone"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "streamlearn"\n')
    monkeypatch.chdir(other)
    elsewhere = doctor.virtualenv(prefix="/venv", base="/usr")
    assert not elsewhere.ok
    assert str(other) in elsewhere.fix


def test_the_wrong_python_fails() -> None:
    assert doctor.python_version((3, 11, 7)).ok
    assert not doctor.python_version((3, 12, 1)).ok


def test_a_service_port_held_on_another_address_is_taken_where_the_service_binds(
    tmp_path: Path,
) -> None:
    """Services bind every interface: a listener on 127.0.0.2 alone still blocks them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        result = _doctor(tmp_path, INFERENCE_GRPC_PORT=str(port))
    line = _line(result.stdout, "inference port")
    assert line.startswith("FAIL")
    assert f"0.0.0.0:{port} is taken" in line


def test_with_nothing_started_what_runs_is_reported_without_failing(tmp_path: Path) -> None:
    from streamlearn.cli.settings import CliSettings

    settings = CliSettings(state_dir=tmp_path / "state", kafka_port=free(), registry_address="x")
    checks = {c.name: c for c in doctor.run_checks(settings)}
    for name in ("kafka", "ingestion", "registry", "inference", "trainer"):
        check = checks[name]
        assert not check.ok and not check.required, name
        assert check.detail.startswith("not running") and "streamlearn up" in check.fix
    assert all(c.required for c in checks.values() if c.name.endswith("port"))


def test_exit_code_ignores_what_was_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = [Check("python", True, "3.11"), Check("registry", False, "not running", "up", False)]
    monkeypatch.setattr(doctor_command, "run_checks", lambda _settings: checks)
    result = CliRunner().invoke(_typer_app, ["doctor"])
    assert result.exit_code == 0
    assert result.output.splitlines()[-1].startswith("--   registry")


def free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
