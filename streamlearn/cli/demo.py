"""`streamlearn demo`: the whole system on embedded defaults.

Until the services land this runs the foundation: the local broker, the standard topics,
and a keyed produce -> consumer-group round trip of synthetic samples through them.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid

import typer
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches, high_watermarks, store_processed
from shared.kafka.producer import delivering, produce
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.cli.context import settings_of
from streamlearn.cli.kafka_access import kafka_for_cli
from streamlearn.v1 import sample_pb2


def demo(
    ctx: typer.Context,
    events: int = typer.Option(10_000, min=1, help="Synthetic samples to send round the loop."),
) -> None:
    """Start the broker, create the topics and send synthetic samples through Kafka and back."""
    console = Console()
    kafka = kafka_for_cli(settings_of(ctx))
    topics = TopicSettings()
    created = ensure_topics(AdminClient(kafka.client_config()), standard_topics(topics))
    console.print(
        f"broker [bold]{kafka.bootstrap_servers}[/] up; created topics: {created or 'none'}"
    )
    start = _high_watermarks(kafka, topics.raw)
    started = time.perf_counter()
    sent = _produce(kafka, topics.raw, events)
    produced_s = time.perf_counter() - started
    received, positive = _consume(kafka, topics.raw, start)
    total_s = time.perf_counter() - started
    table = Table(title="streamlearn demo: produce -> Kafka -> consumer group")
    for column in ("samples sent", "samples received", "positive labels", "produce", "round trip"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{sent:,}",
        f"{received:,}",
        f"{positive:,}",
        f"{sent / produced_s:,.0f}/s",
        f"{total_s:.2f}s",
    )
    console.print(table)
    if received != sent:
        raise typer.Exit(1)


def _produce(kafka: KafkaSettings, topic: str, events: int) -> int:
    """Keyed, idempotent production of a logistic stream; returns acknowledged records."""
    rng = random.Random(7)
    weights = [rng.gauss(0, 1) for _ in range(8)]
    producer = Producer(producer_config(kafka))
    now = Timestamp()
    now.GetCurrentTime()
    with delivering(producer) as report:
        for i in range(events):
            features = [rng.gauss(0, 1) for _ in weights]
            margin = sum(w * x for w, x in zip(weights, features, strict=True))
            label = int(rng.random() < 1 / (1 + math.exp(-margin)))
            sample = sample_pb2.Sample(
                schema_version=1,
                event_id=uuid.uuid4().hex,
                key=f"user-{i % 100}",
                event_time=now,
                stream="demo",
                dense=features,
                class_index=label,
            )
            produce(
                producer, topic, sample.SerializeToString(), sample.key.encode(), on_delivery=report
            )
    return report.delivered


def _high_watermarks(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(kafka, "streamlearn-demo"))
    try:
        return high_watermarks(consumer, topic)
    finally:
        consumer.close()


def _consume(kafka: KafkaSettings, topic: str, start: dict[int, int]) -> tuple[int, int]:
    """Read back what was produced after `start` (manual commits); count it and positives."""
    end = _high_watermarks(kafka, topic)
    expected = sum(end[p] - start.get(p, 0) for p in end)
    consumer = Consumer(consumer_config(kafka, "streamlearn-demo"))
    consumer.assign([TopicPartition(topic, p, start.get(p, 0)) for p in end])
    stop, seen, positives = threading.Event(), 0, 0
    deadline = time.monotonic() + 60
    try:
        for batch in consume_batches(consumer, stop):
            for msg in batch:
                seen += 1
                positives += sample_pb2.Sample.FromString(msg.value() or b"").class_index
            store_processed(consumer, batch)
            if seen >= expected or time.monotonic() > deadline:
                stop.set()
    finally:
        consumer.close()
    return seen, positives
