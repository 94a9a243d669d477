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
