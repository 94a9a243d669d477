"""Events in, better predictions out: trainer -> registry -> inference over the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

from services.inference import app as inference_app
from services.inference.settings import InferenceSettings
from services.registry.settings import RegistrySettings
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from shared.clients.registry import RegistryClient
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering, produce
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session
from shared.settings import KafkaSettings
from streamlearn.client import InferenceClient
from streamlearn.v1 import sample_pb2
from tests.helpers import logloss, version_numbers, wait_until
from tests.integration.conftest import Running

FEATURES = 8
W = np.linspace(-2, 2, FEATURES)


def events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ W))).astype(np.int64)
    return x, y


def test_served_predictions_improve_as_the_trainer_learns_from_the_stream(
    kafka: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    registry_service: Running,
    registry_settings: RegistrySettings,
) -> None:
    train = make_topic(3, "train")
    config = TrainerConfig(
        model=ModelSpec(kind="logistic", features=FEATURES),
        optimizer=OptimizerSpec(name="adagrad", lr=0.1),
    )
    env = {
        "TRAINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRAINER_TOPICS__TRAIN": train,
        "TRAINER_TOPICS__METRICS": f"{train}.metrics",
        "TRAINER_STATE_DIR": str(tmp_path),
        "TRAINER_MODEL_NAME": "e2e",
        "TRAINER_REGISTRY_ADDRESS": registry_service.address,
        "TRAINER_METRICS_PORT": "0",
        "TRAINER_GRPC_PORT": "0",
        "TRAINER_VERSION_EVERY_S": "0.5",
        "TRAINER_CONSUMER_GROUP": f"e2e-{train}",
        "TRAINER_CONFIG": config.model_dump_json(),
    }
    log = tmp_path / "trainer.log"
    with log.open("wb") as out:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "services.trainer"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    inference = None
    try:
        registry = RegistryClient(registry_service.address)
        x, y = events(20_000, seed=1)
        producer = Producer(producer_config(kafka))
        with delivering(producer) as report:
            for i in range(500):  # a trickle first: the first version knows little
                send(producer, train, x[i], y[i], i, report)
        wait_until(lambda: version_numbers(registry, "e2e") != [], 120, pause=0.2)
        first = min(version_numbers(registry, "e2e"))
        inference = Running(
            InferenceSettings(
                grpc_port=0,
                metrics_port=0,
                registry_address=registry_service.address,
                kafka=kafka,
                topics=registry_settings.topics,
                model_names=["e2e"],
                max_batch_size=4096,
            ),
            inference_app.build,
            inference_app.run,
        )
        with delivering(producer) as report:
            for i in range(500, len(y)):
                send(producer, train, x[i], y[i], i, report)
        held_x, held_y = events(2_000, seed=2)
        _, first_bytes = registry.download("e2e", first)
        first_loss = logloss(
            make_session(first_bytes, "cpu").run([OUTPUT], {INPUT: held_x})[0], held_y
        )
        with InferenceClient(inference.address) as client:
            wait_until(lambda: client.ready("e2e"), 60, pause=0.2)
            wait_until(
                lambda: registry.get_version("e2e").lineage.events_seen >= len(y), 180, pause=0.2
            )
            newest = registry.get_version("e2e").version
            wait_until(lambda: client.predict("e2e", held_x[:1])[1] == newest, 60, pause=0.2)
            served, version = client.predict("e2e", held_x)
        assert version > first
        assert logloss(served, held_y) < first_loss - 0.05, (logloss(served, held_y), first_loss)
        trainer.terminate()  # SIGTERM: a final checkpoint, then a clean exit
        assert trainer.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
        if inference is not None:
            inference.close()


def send(
    producer: Producer, topic: str, x: np.ndarray, y: np.int64, i: int, report: object
) -> None:
    sample = sample_pb2.Sample(
        event_id=f"e{i}", key=f"user-{i % 50}", stream="e2e", dense=x.tolist(), class_index=int(y)
    )
    produce(producer, topic, sample.SerializeToString(), sample.key.encode(), on_delivery=report)
