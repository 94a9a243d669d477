"""SIGKILL the trainer at random points of a stream: nothing is lost or applied twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import Producer

from services.trainer import checkpoint
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Learner
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings
from streamlearn.v1 import sample_pb2
from tests.helpers import read_all, wait_until
from tests.integration.conftest import Running

FEATURES = 6
CONFIG = TrainerConfig(
    model=ModelSpec(kind="mlp", features=FEATURES, hidden=(8,)),
    optimizer=OptimizerSpec(name="adam", lr=0.01, schedule="inv_sqrt"),
)


def produce_stream(kafka: KafkaSettings, topic: str, n: int, partitions: int) -> None:
    rng = np.random.default_rng(3)
    w = np.linspace(-1, 1, FEATURES)
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for i in range(n):
            x = rng.normal(size=FEATURES)
            label = int(rng.random() < 1 / (1 + np.exp(-x @ w)))
            sample = sample_pb2.Sample(
                event_id=f"e{i}",
                key=f"k{i % 11}",
                stream="crash",
                dense=x.tolist(),
                class_index=label,
            )
            producer.produce(
                topic,
                sample.SerializeToString(),
                sample.key.encode(),
                partition=i % partitions,
                on_delivery=report,
            )
            producer.poll(0)
    assert report.delivered == n


def trainer_env(kafka: KafkaSettings, topic: str, state: Path, registry: str) -> dict[str, str]:
    return {
        "TRAINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRAINER_TOPICS__TRAIN": topic,
        "TRAINER_TOPICS__METRICS": f"{topic}.metrics",
        "TRAINER_STATE_DIR": str(state),
        "TRAINER_REGISTRY_ADDRESS": registry,
        "TRAINER_CONSUMER_GROUP": f"crash-{topic}",
        "TRAINER_STREAM": "crash",  # the records' stream (the model is named demo)
        "TRAINER_METRICS_PORT": "0",
        "TRAINER_GRPC_PORT": "0",
        "TRAINER_CHECKPOINT_EVERY_EVENTS": "500",
        "TRAINER_CHECKPOINT_EVERY_S": "0.2",
        "TRAINER_VERSION_EVERY_S": "1",
        "TRAINER_CONFIG": CONFIG.model_dump_json(),
        "TRAINER_LOG_LEVEL": "INFO",
    }


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.trainer"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def progress(path: Path) -> int:
    try:
        saved = checkpoint.load(path)
    except Exception:
        return 0
    return 0 if saved is None else saved["learner"]["applied"] + saved["learner"]["skipped"]


def run_with_kills(
    env: dict[str, str], path: Path, total: int, kills: list[int], log: Path
) -> dict[str, object]:
    for target in kills:
        with running(env, log) as process:
            wait_until(lambda t=target, p=process: progress(path) >= t or p.poll() is not None, 240)
            process.send_signal(signal.SIGKILL)  # no chance to checkpoint on the way out
            process.wait()
    starts = log.read_text().count("trainer running") if log.exists() else 0
    with running(env, log) as process:
        # SIGTERM only once the trainer runs (its handler checkpoints on the way out): the
        # last kill may have come after every event was already checkpointed.
        wait_until(
            lambda: log.read_text().count("trainer running") > starts or process.poll() is not None,
            240,
        )
        wait_until(lambda: progress(path) >= total or process.poll() is not None, 240)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]
    saved = checkpoint.load(path)
    assert saved is not None
    return saved


@contextmanager
def running(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A trainer process, killed on the way out if a failed check left it running."""
    process = start(env, log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_killed_at_random_points_ends_with_the_parameters_of_an_uninterrupted_run(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path, registry_service: Running
) -> None:
    total = 12_000
    topic = make_topic(1)
    produce_stream(kafka, topic, total, partitions=1)
    kills = sorted(random.Random(5).sample(range(1_000, total - 1_000), 3))
    path = tmp_path / "trainer" / "demo.ckpt"
    env = trainer_env(kafka, topic, tmp_path, registry_service.address)
    saved = run_with_kills(env, path, total, kills, tmp_path / "trainer.log")

    reference = Learner(CONFIG)
    batch, _ = decode(read_all(kafka, topic, total), CONFIG.task, FEATURES)
    reference.learn(batch)
    resumed = Learner(CONFIG)
    resumed.restore(saved["learner"])  # type: ignore[arg-type]
    assert (resumed.applied, resumed.skipped) == (total, 0)
    for ours, theirs in zip(
        resumed.network.parameters(), reference.network.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert saved["positions"]["next"] == {f"{topic}:0": total}  # type: ignore[index]
    assert saved["last_version"] >= 1  # versions were registered along the way


def test_with_several_partitions_every_event_is_applied_exactly_once(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path, registry_service: Running
) -> None:
    total = 9_000
    topic = make_topic(3)
    produce_stream(kafka, topic, total, partitions=3)
    path = tmp_path / "trainer" / "demo.ckpt"
    env = trainer_env(kafka, topic, tmp_path, registry_service.address)
    # A logistic model: this run exercises the compiled per-event path.
    env["TRAINER_CONFIG"] = TrainerConfig(
        model=ModelSpec(kind="logistic", features=FEATURES),
        optimizer=OptimizerSpec(name="adagrad", lr=0.1),
    ).model_dump_json()
    saved = run_with_kills(env, path, total, [2_500, 6_000], tmp_path / "trainer.log")
    learner = saved["learner"]
    assert learner["applied"] + learner["skipped"] == total  # type: ignore[index]
    assert saved["positions"]["next"] == {  # type: ignore[index]
        f"{topic}:{p}": total // 3 for p in range(3)
    }
    assert json.loads(json.dumps(saved["positions"]))  # plain data, readable by tools
