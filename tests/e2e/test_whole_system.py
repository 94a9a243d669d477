"""The whole system as `streamlearn up` runs it: producer SDK -> ingestion -> trainer ->
registry -> inference over the real broker, with a trainer SIGKILLed mid-stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.clients.registry import RegistryClient
from shared.errors import Unavailable
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.cli.settings import CliSettings
from streamlearn.client import InferenceClient, SampleProducer
from streamlearn.client.datasets import Synthetic
from streamlearn.system.control import LocalSystem
from streamlearn.system.status import collect
from streamlearn.v1 import metrics_pb2
from tests.e2e.system import service_state, system_env
from tests.helpers import logloss, read_to_end, version_numbers, wait_until

FEATURES = 8
DATASET = Synthetic("binary", features=FEATURES, seed=3)
TOTAL = 30_000


def test_up_fails_fast_with_the_log_of_a_service_that_cannot_start(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _ = system_env(kafka, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    local = LocalSystem(CliSettings())
    with socket.socket() as taken:  # something else holds the registry's port
        taken.bind(("127.0.0.1", int(env["REGISTRY_GRPC_PORT"])))
        taken.listen()
        try:
            with pytest.raises(Unavailable, match="registry keeps exiting") as failed:
                local.up(timeout_s=120)
        finally:
            local.down(stop_kafka=False)
    assert "cannot bind" in str(failed.value)
    assert local.supervisor_pid() is None


def test_up_learns_serves_survives_a_killed_trainer_and_goes_down(
    kafka: KafkaSettings, system: tuple[LocalSystem, TopicSettings]
) -> None:
    local, topics = system
    address = {s.name: s.address for s in local.plan()}
    inference = service_state(local, "inference")  # up, but no version to serve yet
    assert inference["answering"] and not inference["healthy"]
    publish_definition(kafka, topics.streams, DATASET.definition("e2e"))
    (x, y), (held_x, held_y) = _stream(), DATASET.holdout(2000, 0)
    registry = RegistryClient(address["registry"])
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="e2e") as producer:
        for i in range(50):  # a trickle of one-sample records: the first version knows little
            producer.send({"features": x[i], "label": int(y[i]), "key": f"u{i % 20}"})
    wait_until(lambda: version_numbers(registry, "e2e") != [], 120, pause=0.2)
    first = min(version_numbers(registry, "e2e"))
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="e2e") as producer:
        producer.send_columns(x[50:15_000], y[50:15_000], keys=["bulk"] * 14_950)
    trainer_pid = service_state(local, "trainer")["pid"]
    os.kill(trainer_pid, signal.SIGKILL)  # mid-stream: the supervisor restarts it
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="e2e") as producer:
        producer.send_columns(x[15_000:], y[15_000:], keys=["bulk"] * (TOTAL - 15_000))
    wait_until(lambda: service_state(local, "trainer")["restarts"] == 1, 60, pause=0.2)
    wait_until(lambda: registry.get_version("e2e").lineage.events_seen >= TOTAL, 180, pause=0.2)
    newest = registry.get_version("e2e")
    assert newest.lineage.events_seen == TOTAL  # crash-exact: nothing lost, nothing twice
    with InferenceClient(address["inference"]) as client:
        wait_until(lambda: client.served()["e2e"] == newest.version, 60, pause=0.2)
        served, version = client.predict("e2e", held_x)
    _, first_bytes = registry.download("e2e", first)
    first_scores = make_session(first_bytes, "cpu").run([OUTPUT], {INPUT: held_x})[0]
    assert version > first
    assert logloss(served, held_y) < logloss(first_scores, held_y) - 0.05
    assert _accuracy(served, held_y) > 0.9
    _check_status(local, newest.version)
    _check_metrics_topic(kafka, topics.metrics)
    registry.close()
    _check_cli_status(local)
    assert local.down(stop_kafka=False)
    assert local.supervisor_pid() is None
    assert not any(s["answering"] for s in collect(local)["services"])


def _stream() -> tuple[np.ndarray, np.ndarray]:
    x, y = zip(*DATASET.chunks(TOTAL), strict=True)
    return np.concatenate(x), np.concatenate(y)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(((scores.ravel() > 0.5) == labels).mean())


def _check_status(local: LocalSystem, version: int) -> None:
    found = collect(local)
    assert all(s["healthy"] and s["state"] == "running" for s in found["services"]), found
    wait_until(lambda: service_state(local, "ingestion")["lag"] == 0, 30, pause=0.5)
    wait_until(lambda: service_state(local, "trainer")["lag"] == 0, 30, pause=0.5)
    (model,) = collect(local)["models"]
    assert model["name"] == "e2e" and model["served_version"] >= version


def _check_metrics_topic(kafka: KafkaSettings, topic: str) -> None:
    published = [
        metrics_pb2.TrainerMetrics.FromString(m.value()) for m in read_to_end(kafka, topic)
    ]
    assert published and {(m.model, m.stream) for m in published} == {("e2e", "e2e")}
    assert published[-1].events_applied == TOTAL
    assert 0 < published[-1].metrics["logloss"] < 0.5


def _check_cli_status(local: LocalSystem) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "streamlearn"), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"healthy": true' in done.stdout
