"""`demo --fresh` against the real broker: topics deleted, gone, recreated empty, then the
checkpoint removed, in that order."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.consumer import high_watermarks
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.system import demo_state


def test_reset_deletes_waits_recreates_then_removes_the_checkpoint(
    kafka: KafkaSettings, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(
        raw=f"reset.raw.{tag}",
        train=f"reset.train.{tag}",
        dlq=f"reset.dlq.{tag}",
        metrics=f"reset.metrics.{tag}",
        partitions=2,
    )
    names = {topics.raw, topics.train, topics.dlq, topics.metrics}
    ensure_topics(kafka_admin, [TopicSpec(topics.train, 2)])  # the others do not exist yet
    producer = Producer(kafka.client_config())
    for i in range(10):
        producer.produce(topics.train, f"r{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    checkpoint = tmp_path / "trainer" / "demo.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"offsets into the old topic")
    steps: list[tuple[str, bool, set[str]]] = []

    def say(line: str) -> None:
        present = names & set(kafka_admin.list_topics(timeout=10).topics)
        steps.append((line.split()[0], checkpoint.exists(), present))

    demo_state.reset(kafka, topics, checkpoint, say)

    assert [s[0] for s in steps] == ["deleting", "deleted", "recreated", "removed"]
    assert steps[0] == ("deleting", True, {topics.train})
    assert steps[1] == ("deleted", True, set())  # gone from the metadata before creation
    assert steps[2] == ("recreated", True, names)  # the checkpoint outlives the topics' reset
    assert steps[3] == ("removed", False, names)
    consumer = Consumer(kafka.client_config() | {"group.id": f"reset-{tag}"})
    try:
        assert _marks(consumer, topics.train) == {0: 0, 1: 0}  # empty, same shape
    finally:
        consumer.close()


def _marks(consumer: Consumer, topic: str) -> dict[int, int]:
    """High watermarks once the recreated partitions answer (a new topic id settles first)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return high_watermarks(consumer, topic)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
