from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import BrokerError
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig, server_properties
from shared.kafka.local.jars import find_pom, jar_dir


def test_single_node_properties_use_the_configured_ports_and_one_replica(tmp_path: Path) -> None:
    text = server_properties(BrokerConfig(state_dir=tmp_path, port=1234, controller_port=1235))
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:1235"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:1235"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"


def test_jar_cache_is_keyed_by_the_pom(tmp_path: Path) -> None:
    pom = find_pom()
    assert pom.name == "pom.xml"
    copy = tmp_path / "pom.xml"
    copy.write_text(pom.read_text() + "<!-- changed -->")
    assert jar_dir(tmp_path, pom) != jar_dir(tmp_path, copy)
    assert jar_dir(tmp_path, pom) == jar_dir(tmp_path, pom)


def test_missing_java_is_named(tmp_path: Path) -> None:
    broker = LocalBroker(BrokerConfig(state_dir=tmp_path, java="no-such-java-17"))
    with pytest.raises(BrokerError, match=r"Java .* is not installed"):
        broker.start()


def test_status_of_a_never_started_broker_is_stopped(tmp_path: Path) -> None:
    status = LocalBroker(BrokerConfig(state_dir=tmp_path)).status()
    assert (status.state, status.pid) == ("stopped", None)


def test_stale_pid_file_is_not_a_running_broker(tmp_path: Path) -> None:
    (tmp_path / "broker.pid").write_text("1")  # pid 1 exists but is not kafka.Kafka
    assert LocalBroker(BrokerConfig(state_dir=tmp_path)).status().state == "stopped"
    assert not (tmp_path / "broker.pid").exists()
