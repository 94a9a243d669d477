"""`streamlearn kafka start|stop|status` on a broker of its own, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.errors import BrokerError
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig
from shared.net import free_port
from shared.settings import DEFAULT_CACHE_DIR, KafkaSettings
from tests.helpers import read_all


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from streamlearn.cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | env,
        check=False,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "STREAMLEARN_STATE_DIR": str(tmp_path),
        "STREAMLEARN_CACHE_DIR": str(DEFAULT_CACHE_DIR),
        "STREAMLEARN_KAFKA_PORT": str(free_port()),
        "STREAMLEARN_KAFKA_CONTROLLER_PORT": str(free_port()),
    }


def test_start_is_idempotent_stop_is_clean_and_data_survives_cycles(
    cli_env: dict[str, str],
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from shared.kafka.admin import TopicSpec, ensure_topics
    from shared.kafka.config import producer_config
    from shared.kafka.producer import delivering

    started = _cli(cli_env, "kafka", "start", "--json")
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    try:
        again = json.loads(_cli(cli_env, "kafka", "start", "--json").stdout)
        assert again["pid"] == first["pid"] and again["state"] == "running"
        kafka = KafkaSettings(bootstrap_servers=first["bootstrap"])
        ensure_topics(AdminClient(kafka.client_config()), [TopicSpec("kept", 1)])
        producer = Producer(producer_config(kafka))
        with delivering(producer) as report:
            for i in range(20):
                producer.produce("kept", str(i).encode(), b"k", on_delivery=report)
        for _ in range(2):
            assert _cli(cli_env, "kafka", "stop").stdout.strip() == "kafka stopped"
            status = _cli(cli_env, "kafka", "status")
            assert (status.returncode, status.stdout.strip()) == (3, "kafka stopped")
            assert _cli(cli_env, "kafka", "start").returncode == 0
            assert _cli(cli_env, "kafka", "status").returncode == 0
        values = sorted(int(m.value()) for m in read_all(kafka, "kept", 20))
        assert values == list(range(20))
    finally:
        _cli(cli_env, "kafka", "stop")
    assert _cli(cli_env, "kafka", "stop").stdout.strip() == "kafka was not running"


def test_a_taken_port_is_one_clear_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(cli_env["STREAMLEARN_KAFKA_PORT"])))
        blocker.listen()
        result = _cli(cli_env, "kafka", "start")
    assert result.returncode == 1
    assert "port 127.0.0.1:" in result.stderr and "is taken" in result.stderr
    assert "Traceback" not in result.stderr
    assert _cli(cli_env, "kafka", "status").returncode == 3


def test_a_broker_that_dies_during_start_up_reports_its_log(tmp_path: Path) -> None:
    config = BrokerConfig(
        state_dir=tmp_path,
        cache_dir=DEFAULT_CACHE_DIR,
        heap="1k",
        port=free_port(),
        controller_port=free_port(),
    )
    with pytest.raises(BrokerError, match=r"exited during start-up(.|\n)*heap"):
        LocalBroker(config).start()


def test_unreachable_maven_is_one_clear_error(tmp_path: Path) -> None:
    # Offline with an empty local repository is what "Maven Central unreachable" looks like.
    config = BrokerConfig(
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "empty-cache",
        mvn_args=("-o", f"-Dmaven.repo.local={tmp_path / 'empty-repo'}"),
    )
    with pytest.raises(BrokerError, match="Maven could not resolve the Kafka broker jars"):
        LocalBroker(config).start()
