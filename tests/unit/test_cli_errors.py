"""Expected failures: one line that names what is missing, where, and how to start it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from shared.errors import Unavailable
from shared.net import free_port
from streamlearn.cli.reach import ServiceDown, needs


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | env,
        check=False,
    )


def test_a_registry_that_is_not_running_is_named_with_its_address_and_the_fix() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = _cli("registry", "list", STREAMLEARN_REGISTRY_ADDRESS=address)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the registry is not running at " + address)
    assert "`streamlearn up`" in line
    assert "Traceback" not in result.stderr


def test_verbose_shows_the_cause_chain_and_still_ends_with_the_fix() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = _cli("--verbose", "registry", "list", STREAMLEARN_REGISTRY_ADDRESS=address)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "shared.errors.Unavailable" in result.stderr  # the gRPC failure it came from
    assert "direct cause" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the registry is not running")


def test_an_external_broker_that_does_not_answer_is_named_with_its_address() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    result = _cli("stream", "list", STREAMLEARN_KAFKA_BOOTSTRAP=bootstrap)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: Kafka is not running at {bootstrap}")
    assert "STREAMLEARN_KAFKA_BOOTSTRAP" in line


def test_a_bad_setting_is_a_usage_error_without_traceback() -> None:
    result = _cli("status", STREAMLEARN_KAFKA_PORT="not-a-port")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: invalid setting kafka_port")


def test_a_missing_argument_is_a_usage_error() -> None:
    result = _cli("registry", "show")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A gRPC server with no services: it accepts connections, answers nothing useful."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_server_that_answers_keeps_its_own_error(silent_server: str) -> None:
    with pytest.raises(Unavailable) as raised, needs("the registry", silent_server):
        raise Unavailable("model not loaded yet")
    assert not isinstance(raised.value, ServiceDown)
    assert str(raised.value) == "model not loaded yet"


def test_an_address_where_nothing_listens_means_the_service_is_down() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServiceDown) as raised, needs("inference", address):
        raise Unavailable("failed to connect to all addresses")
    assert raised.value.address == address
    assert str(raised.value).startswith(f"inference is not running at {address}; start it with")
