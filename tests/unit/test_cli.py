from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from shared.errors import StreamlearnError
from streamlearn.cli.failures import exit_code, message, report
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


def test_bench_names_are_checked_without_importing_a_benchmark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import catalog

    _unimportable_benchmarks(monkeypatch)
    assert "trainer" in catalog.BENCHMARKS and "nope" not in catalog.BENCHMARKS
    with pytest.raises(StreamlearnError, match="benchmark 'trainer' cannot run: import of"):
        catalog.BENCHMARKS["trainer"]


def _unimportable_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `bench.NAME` fails to import, as without torch (None in sys.modules)."""
    from bench import catalog

    for name in catalog.NAMES:
        monkeypatch.setitem(sys.modules, f"bench.{name}", None)


def test_bench_all_with_a_missing_dependency_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamlearn.cli import bench as bench_command

    _unimportable_benchmarks(monkeypatch)
    monkeypatch.setattr(bench_command, "kafka_for_cli", lambda settings: settings.kafka())
    result = CliRunner().invoke(_typer_app, ["bench", "--all"])
    assert isinstance(result.exception, StreamlearnError)
    assert report(result.exception, verbose=False) == 1


def test_a_kafka_exception_raised_with_text_is_one_line() -> None:
    from confluent_kafka import KafkaError, KafkaException

    assert message(KafkaException("commit failed")) == (
        "Kafka: commit failed (`streamlearn kafka status`)"
    )
    assert exit_code(KafkaException("commit failed")) == 1
    assert message(KafkaException()) == "Kafka: KafkaException (`streamlearn kafka status`)"
    error = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert message(error) == "Kafka: broker down (`streamlearn kafka status`)"
