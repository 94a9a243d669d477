"""Predictions and feedback are co-partitioned by event id whoever writes them.

Every streamlearn producer (inference's prediction log, the SDK, gRPC Ingest) partitions keyed
records as Java's client does, so feedback a Java, aiokafka or kafka-python producer sends
with its default partitioner lands in the partition of its prediction, where the joiner that
holds the prediction reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from shared.feedback import Label
from shared.kafka.config import producer_config
from shared.settings import KafkaSettings
from streamlearn.client.producer import SampleProducer

PARTITIONS = 7


def java_partition(key: bytes, partitions: int) -> int:
    """Java's DefaultPartitioner: `toPositive(murmur2(key)) % partitions` (its reference)."""
    m, r = 0x5BD1E995, 24
    length = len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = key[length - length % 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def _partitions_of(kafka: KafkaSettings, topic: str) -> dict[bytes, int]:
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": "p", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        found: dict[bytes, int] = {}
        empty = 0
        while empty < 5:
            batch = consumer.consume(500, timeout=1.0)
            empty = 0 if batch else empty + 1
            for msg in batch:
                if msg.error() is None:
                    found[msg.key() or b""] = msg.partition() or 0
        return found
    finally:
        consumer.close()


def test_our_producers_put_an_event_id_where_javas_default_partitioner_does(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    predictions, feedback = make_topic(PARTITIONS, "predictions"), make_topic(PARTITIONS, "fb")
    ids = [b"", b"a", b"ab", b"abc"] + [f"req-{i}/{i % 3}".encode() for i in range(60)]
    # What inference's prediction log producer is: producer_config's defaults.
    producer = Producer(producer_config(kafka))
    for event_id in ids:
        producer.produce(predictions, b"p", event_id)
    assert producer.flush(30) == 0
    with SampleProducer(kafka=kafka, stream="clicks", feedback_topic=feedback) as sdk:
        for event_id in ids[1:]:  # the SDK refuses an empty event id
            sdk.feedback(event_id.decode(), label=Label.class_index(1))
    served, reported = _partitions_of(kafka, predictions), _partitions_of(kafka, feedback)
    assert served == {k: java_partition(k, PARTITIONS) for k in ids}
    assert reported == {k: served[k] for k in ids[1:]}
    assert len(set(served.values())) > 1  # the ids did spread: the check can tell
