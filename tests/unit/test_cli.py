from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from streamlearn.cli.main import _typer_app


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(_typer_app, ["--help"])
    assert result.exit_code == 0
    for command in ("kafka", "bench", "demo"):
        assert command in result.output


def test_unknown_benchmark_is_one_clear_line_and_exit_code_2() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from streamlearn.cli.main import app; app()",
            "bench",
            "no-such-bench",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown benchmark")
    assert "Traceback" not in result.stderr


def test_every_listed_command_loads_and_runs_its_own_help() -> None:
    from streamlearn.cli.main import _Root

    for name in _Root.lazy:
        result = CliRunner().invoke(_typer_app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f" {name} [OPTIONS]" in result.output  # its own usage line, not the root's


def test_version_prints_the_package_version_and_more_when_verbose() -> None:
    from importlib.metadata import version

    short = CliRunner().invoke(_typer_app, ["--version"])
    assert short.exit_code == 0
    assert short.output.strip() == f"streamlearn {version('streamlearn')}"
    long = CliRunner().invoke(_typer_app, ["--version", "--verbose"])
    names = [line.split()[0] for line in long.output.splitlines()]
    assert {"streamlearn", "kafka", "librdkafka", "torch", "onnxruntime"} <= set(names)


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(_typer_app, ["--help"])
    assert "--install-completion" in result.output
