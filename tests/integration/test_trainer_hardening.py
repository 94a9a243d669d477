"""The trainer loop on a real broker: fenced by static membership, other streams on the topic."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer

from services.trainer import checkpoint
from services.trainer.app import build
from services.trainer.config import ModelSpec, TrainerConfig
from services.trainer.loop import ConsumerFatal, TrainerLoop
from services.trainer.settings import TrainerSettings
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.v1 import sample_pb2
from tests.helpers import wait_until

FEATURES = 4


def produce(kafka: KafkaSettings, topic: str, streams: list[str]) -> None:
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for i, stream in enumerate(streams):
            sample = sample_pb2.Sample(
                event_id=f"e{i}", stream=stream, dense=[i % 3, 1, -1, 0.5], class_index=i % 2
            )
            producer.produce(topic, sample.SerializeToString(), b"k", on_delivery=report)
            producer.poll(0)
    assert report.delivered == len(streams)


def settings(kafka: KafkaSettings, topic: str, state: Path, **extra: object) -> TrainerSettings:
    return TrainerSettings(
        kafka=kafka,
        topics=TopicSettings(train=topic, metrics=f"{topic}.metrics"),
        state_dir=state,
        consumer_group=f"hardening-{topic}",
        config=TrainerConfig(model=ModelSpec(kind="logistic", features=FEATURES)),
        metrics_port=0,
        checkpoint_every_s=0.2,
        **extra,  # type: ignore[arg-type]
    )


def start(loop: TrainerLoop) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop, errors = threading.Event(), []

    def target() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, stop, errors


def test_a_trainer_fenced_by_its_static_membership_id_stops_without_checkpointing(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(1)
    produce(kafka, topic, ["demo"] * 200)
    config = settings(kafka, topic, tmp_path, trainer_id="trainer-fenced")
    loop = build(config)
    thread, stop, errors = start(loop)
    wait_until(lambda: loop.learner.applied == 200, 60)
    wait_until(lambda: checkpoint.load(config.checkpoint_path) is not None, 30)
    # Another instance joins with the same group.instance.id: the first one is fenced.
    usurper = Consumer(
        consumer_config(
            kafka,
            config.consumer_group,
            enable_auto_commit=False,
            group_instance_id="trainer-fenced",
            session_timeout_ms=10_000,
        )
    )
    usurper.subscribe([topic])
    try:
        deadline_thread = threading.Thread(target=lambda: [usurper.poll(0.2) for _ in range(150)])
        deadline_thread.start()
        thread.join(60)
        assert not thread.is_alive(), "a fenced trainer kept running"
        stop.set()
        deadline_thread.join(60)
    finally:
        stop.set()
        usurper.close()
    assert len(errors) == 1 and isinstance(errors[0], ConsumerFatal), errors
    assert "fatal consumer error" in str(errors[0])
    # The checkpoint was left alone after the error: moving it proves no later write.
    config.checkpoint_path.rename(tmp_path / "moved.ckpt")
    loop.save()
    assert not config.checkpoint_path.exists()


def test_records_of_other_streams_on_the_topic_are_skipped(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(2)
    streams = ["demo", "other", "demo", "demo", "third"] * 40
    produce(kafka, topic, streams)
    loop = build(settings(kafka, topic, tmp_path))
    thread, stop, errors = start(loop)
    try:
        wait_until(
            lambda: sum(loop.positions.next.values()) == len(streams) or not thread.is_alive(), 60
        )
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert (loop.learner.applied, loop.learner.skipped) == (streams.count("demo"), 0)
