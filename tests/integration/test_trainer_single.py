"""One trainer per model on a real broker: a group per model, a second instance refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from services.trainer import checkpoint
from services.trainer.app import build
from services.trainer.config import ModelSpec, TrainerConfig
from services.trainer.loop import TrainerLoop
from services.trainer.settings import TrainerSettings
from shared.errors import Conflict
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.v1 import sample_pb2
from tests.helpers import wait_until
from tests.integration.conftest import Running

FEATURES = 4
CONFIG = TrainerConfig(model=ModelSpec(kind="logistic", features=FEATURES))


def produce(kafka: KafkaSettings, topic: str, streams: list[str], start: int = 0) -> None:
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for i, stream in enumerate(streams, start):
            sample = sample_pb2.Sample(
                event_id=f"e{i}", stream=stream, dense=[i % 3, 1, -1, 0.5], class_index=i % 2
            )
            producer.produce(topic, sample.SerializeToString(), f"k{i}", on_delivery=report)
            producer.poll(0)
    assert report.delivered == len(streams)


def settings(
    kafka: KafkaSettings, topic: str, state: Path, model: str, trainer_id: str
) -> TrainerSettings:
    """A trainer of `model` (its stream), in its default consumer group."""
    return TrainerSettings(
        kafka=kafka,
        topics=TopicSettings(train=topic, metrics=f"{topic}.metrics"),
        state_dir=state,
        model_name=model,
        trainer_id=trainer_id,
        config=CONFIG,
        metrics_port=0,
        grpc_port=0,
        checkpoint_every_s=0.2,
    )


class Started:
    """A trainer loop learning in a thread; `errors` gets what stopped it."""

    def __init__(self, loop: TrainerLoop) -> None:
        self.loop, self.stop, self.errors = loop, threading.Event(), list[BaseException]()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run(self.stop)
        except BaseException as exc:  # handed to the test
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def test_trainers_of_two_models_on_one_topic_each_learn_their_whole_stream(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(3)
    first, second = f"{topic}-a", f"{topic}-b"
    streams = [first, second, first, first, second] * 60
    produce(kafka, topic, streams)
    one = settings(kafka, topic, tmp_path / "a", first, "trainer-0")
    two = settings(kafka, topic, tmp_path / "b", second, "trainer-0")  # ids are per group
    assert one.consumer_group != two.consumer_group
    trainers = [Started(build(one)), Started(build(two))]
    try:
        for trainer in trainers:
            wait_until(
                lambda t=trainer: (
                    sum(t.loop.positions.next.values()) == len(streams) or not t.thread.is_alive()
                ),
                90,
            )
    finally:
        for trainer in trainers:
            trainer.close()
    assert not trainers[0].errors and not trainers[1].errors
    assert trainers[0].loop.learner.applied == streams.count(first)
    assert trainers[1].loop.learner.applied == streams.count(second)


def start_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.trainer"],
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_second_instance_of_a_model_exits_and_a_restart_of_the_first_is_accepted(
    kafka: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    registry_service: Running,
) -> None:
    topic = make_topic(2)
    model = f"{topic}-m"
    produce(kafka, topic, [model] * 100)
    mine = settings(kafka, topic, tmp_path / "first", model, "first")
    first = Started(build(mine))
    try:
        wait_until(lambda: first.loop.learner.applied == 100 or not first.thread.is_alive(), 90)
        log = tmp_path / "second.log"
        second = start_process(
            {
                "TRAINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "TRAINER_TOPICS__TRAIN": topic,
                "TRAINER_TOPICS__METRICS": f"{topic}.metrics",
                "TRAINER_STATE_DIR": str(tmp_path / "second"),
                "TRAINER_REGISTRY_ADDRESS": registry_service.address,
                "TRAINER_MODEL_NAME": model,
                "TRAINER_TRAINER_ID": "second",
                "TRAINER_CONFIG": CONFIG.model_dump_json(),
                "TRAINER_METRICS_PORT": "0",
                "TRAINER_GRPC_PORT": "0",
            },
            log,
        )
        assert second.wait(120) != 0
        output = log.read_text()
        assert "refuses to run as a second instance" in output, output[-3000:]
        assert f"streamlearn-trainer-{model}" in output and "first" in output
        assert not (tmp_path / "second" / "trainer" / f"{model}.ckpt").exists()
        # The first one kept its partitions and goes on learning.
        produce(kafka, topic, [model] * 50, start=100)
        wait_until(lambda: first.loop.learner.applied == 150 or not first.thread.is_alive(), 60)
        assert first.thread.is_alive() and not first.errors
    finally:
        first.close()
    # A restart of the first (same trainer id): its previous member is still listed in the
    # group (static membership outlives close() until the session times out), and accepted.
    restarted = Started(build(mine))
    try:
        assert restarted.loop.learner.applied == 150  # restored from its checkpoint
        produce(kafka, topic, [model] * 30, start=150)
        wait_until(
            lambda: restarted.loop.learner.applied == 180 or not restarted.thread.is_alive(), 60
        )
        assert restarted.thread.is_alive() and not restarted.errors
    finally:
        restarted.close()


def test_two_instances_starting_at_once_never_both_keep_running(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(2)
    model = f"{topic}-m"
    produce(kafka, topic, [model] * 100)
    one = settings(kafka, topic, tmp_path / "one", model, "one")
    two = settings(kafka, topic, tmp_path / "two", model, "two")
    loops = [build(one), build(two)]  # both pass the start-up check: neither is a member yet
    trainers = [Started(loop) for loop in loops]
    try:
        wait_until(lambda: any(not t.thread.is_alive() for t in trainers), 90)
        stopped = [t for t in trainers if not t.thread.is_alive()]
        for trainer in stopped:
            assert len(trainer.errors) == 1 and isinstance(trainer.errors[0], Conflict)
            assert trainer.loop.learner.applied == 0
        survivors = [t for t in trainers if t.thread.is_alive()]
        for survivor in survivors:  # it learns everything once the refused member is gone
            wait_until(
                lambda s=survivor: s.loop.learner.applied == 100 or not s.thread.is_alive(), 90
            )
            assert survivor.thread.is_alive()
        assert len(survivors) <= 1
    finally:
        for trainer in trainers:
            trainer.stop.set()
            trainer.thread.join(60)
    for settings_, trainer in zip((one, two), trainers, strict=True):
        if trainer.errors:
            assert checkpoint.load(settings_.checkpoint_path) is None
