"""Kafka plumbing: shared producer/consumer helpers against plain confluent-kafka loops.

- produce: the SDK's `SampleProducer.send` and the shared helper (idempotent, acks=all,
  delivery reports counted) vs a plain confluent-kafka producer with librdkafka's defaults
  and the same guarantees; and that producer vs librdkafka's defaults without idempotence
  (the price of the guarantees themselves).
- consume: `consume_batches` storing offsets once per batch vs a `poll()`-per-record loop
  storing each offset; both read the same topic from the beginning in fresh groups, and
  both commit the stored offsets in the background and on close.
"""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure, events_per_second
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches, store_processed
from shared.kafka.producer import delivering, produce
from streamlearn.client import SampleProducer
from streamlearn.v1 import sample_pb2

FEATURES = 32


def run(ctx: BenchContext) -> list[Figure]:
    """Measure produce and consume throughput on one fresh topic."""
    count = ctx.count(100_000)
    topic = f"bench.kafka.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(ctx.kafka.client_config()), [TopicSpec(topic, 1)])
    payloads = [_payload(i) for i in range(count)]
    samples = [sample_pb2.Sample.FromString(p) for p in payloads]
    guaranteed = {"enable.idempotence": True, "acks": "all"}
    shared_rate = events_per_second(count, lambda: _produce_shared(ctx, topic, payloads))
    sdk_rate = events_per_second(count, lambda: _produce_sdk(ctx, topic, samples))
    same_rate = events_per_second(count, lambda: _produce_plain(ctx, topic, payloads, guaranteed))
    plain_rate = events_per_second(count, lambda: _produce_plain(ctx, topic, payloads))
    total = 4 * count
    batch_rate = total / _consume_batches(ctx, topic, total)
    poll_rate = total / _consume_polling(ctx, topic, total)
    return [
        Figure(
            "SDK SampleProducer.send (idempotent, acks=all)",
            sdk_rate,
            "events/s",
            "librdkafka defaults, same guarantees",
            same_rate,
        ),
        Figure(
            "shared produce helper (idempotent, acks=all)",
            shared_rate,
            "events/s",
            "librdkafka defaults, same guarantees",
            same_rate,
        ),
        Figure(
            "librdkafka idempotent, acks=all",
            same_rate,
            "events/s",
            "librdkafka defaults (no idempotence)",
            plain_rate,
        ),
        Figure(
            "consume (batched, offsets stored per batch)",
            batch_rate,
            "events/s",
            "poll() per record",
            poll_rate,
        ),
    ]


def _payload(i: int) -> bytes:
    sample = sample_pb2.Sample(
        schema_version=1,
        event_id=f"e{i}",
        key=f"k{i % 64}",
        stream="bench",
        dense=[float((i * 7 + j) % 13) / 13.0 for j in range(FEATURES)],
        class_index=i % 2,
    )
    return sample.SerializeToString()


def _produce_shared(ctx: BenchContext, topic: str, payloads: list[bytes]) -> None:
    producer = Producer(producer_config(ctx.kafka))
    with delivering(producer) as report:
        for i, value in enumerate(payloads):
            produce(producer, topic, value, f"k{i % 64}".encode(), on_delivery=report)


def _produce_sdk(ctx: BenchContext, topic: str, samples: list[sample_pb2.Sample]) -> None:
    with SampleProducer(kafka=ctx.kafka, topic=topic, stream="bench") as producer:
        for sample in samples:
            producer.send(sample)


def _produce_plain(
    ctx: BenchContext, topic: str, payloads: list[bytes], settings: dict[str, object] | None = None
) -> None:
    producer = Producer({"bootstrap.servers": ctx.kafka.bootstrap_servers, **(settings or {})})
    for i, value in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, value, f"k{i % 64}".encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(30)


def _consume_batches(ctx: BenchContext, topic: str, expected: int) -> float:
    """Seconds from the first record to the last one stored (group join excluded)."""
    consumer = Consumer(consumer_config(ctx.kafka, f"bench-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    seen, stop, first = 0, threading.Event(), 0.0
    try:
        for batch in consume_batches(consumer, stop, batch_size=1000):
            first = first or time.perf_counter()
            seen += len(batch)
            store_processed(consumer, batch)
            if seen >= expected:
                stop.set()
        return time.perf_counter() - first
    finally:
        consumer.close()


def _consume_polling(ctx: BenchContext, topic: str, expected: int) -> float:
    """Seconds from the first record to the last one stored (group join excluded)."""
    consumer = Consumer(consumer_config(ctx.kafka, f"bench-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    seen, first = 0, 0.0
    try:
        while seen < expected:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            first = first or time.perf_counter()
            consumer.store_offsets(msg)
            seen += 1
        return time.perf_counter() - first
    finally:
        consumer.close()
