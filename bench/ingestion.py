"""Ingestion throughput beside a plain confluent-kafka pass-through on the same records.

The same stream (binary labels, 32 features) is produced to fresh raw topics, once as one
record per sample and once as columnar batches of 1,000 rows. The ingestion service (a
separate process: faust worker, validation, de-duplication, routing with headers) drains
each; the baseline is a confluent-kafka loop that copies the single-sample records to an
output topic unchanged (batched consume, idempotent produce, no checks). Rates count
samples from the first output record to the last one.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from bench.processes import service
from services.ingestion.servicer import SERVICE
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches, high_watermarks, store_processed
from shared.kafka.producer import produce
from shared.net import free_port
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer

FEATURES = 32
PARTITIONS = 1


def run(ctx: BenchContext) -> list[Figure]:
    """Drain the same samples through ingestion (single and columnar) and a pass-through."""
    n = ctx.count(60_000)
    prefix = f"bench.ingestion.{uuid.uuid4().hex[:8]}"
    topics = {name: f"{prefix}.{name}" for name in ("single", "batched", "train", "dlq", "copy")}
    topics["streams"] = f"{prefix}.streams"
    admin = AdminClient(ctx.kafka.client_config())
    ensure_topics(admin, [TopicSpec(t, PARTITIONS) for t in topics.values()])
    dataset = Synthetic("binary", features=FEATURES)
    publish_definition(ctx.kafka, topics["streams"], dataset.definition("bench"))
    _produce(ctx.kafka, topics, dataset, n)
    watch = _Watch(ctx.kafka, topics["copy"], n)
    _pass_through(ctx.kafka, topics, n)
    baseline = n / watch.seconds()
    single = _ingest(ctx.kafka, topics, "single", n, n)
    batched = _ingest(ctx.kafka, topics, "batched", n, -(-n // 1000))
    return [
        Figure("ingestion, one record per sample", single, "samples/s", "pass-through", baseline),
        Figure(
            "ingestion, columnar batches of 1,000", batched, "samples/s", "pass-through", baseline
        ),
    ]


def _produce(kafka: KafkaSettings, topics: dict[str, str], dataset: Synthetic, n: int) -> None:
    for kind in ("single", "batched"):
        with SampleProducer(kafka=kafka, topic=topics[kind], stream="bench") as producer:
            for x, y in dataset.chunks(n, chunk=1000):
                keys = [f"k{i % 100}" for i in range(len(x))]
                if kind == "batched":
                    producer.send_columns(x, y, keys=keys)
                    continue
                for i in range(len(x)):
                    producer.send({"features": x[i], "label": int(y[i]), "key": keys[i]})


def _ingest(kafka: KafkaSettings, topics: dict[str, str], raw: str, n: int, records: int) -> float:
    port = free_port()
    env = {
        "INGESTION_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "INGESTION_TOPICS__RAW": topics[raw],
        "INGESTION_TOPICS__TRAIN": topics["train"],
        "INGESTION_TOPICS__DLQ": topics["dlq"],
        "INGESTION_TOPICS__STREAMS": topics["streams"],
        "INGESTION_CONSUMER_GROUP": f"{topics[raw]}.group",
        "INGESTION_GRPC_PORT": str(port),
        "INGESTION_METRICS_PORT": "0",
        "INGESTION_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ingestion.log"
        watch = _Watch(kafka, topics["train"], records)
        with service("services.ingestion", env, f"127.0.0.1:{port}", SERVICE, log):
            return n / watch.seconds()


class _Watch(threading.Thread):
    """Times a topic growing by `records`: from its first new record to the last one."""

    def __init__(self, kafka: KafkaSettings, topic: str, records: int) -> None:
        super().__init__(daemon=True)
        # One consumer polls the end offsets: creating one per poll would load the very
        # machine being measured.
        self._consumer = Consumer(consumer_config(kafka, "bench-ingestion-watch"))
        self._topic = topic
        self._before = sum(high_watermarks(self._consumer, topic).values())
        self._goal = self._before + records
        self._elapsed: float | None = None
        self.start()

    def run(self) -> None:
        first, deadline = 0.0, time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                count = sum(high_watermarks(self._consumer, self._topic).values())
                now = time.perf_counter()
                first = first or (now if count > self._before else 0.0)
                if count >= self._goal:
                    self._elapsed = now - first
                    return
                time.sleep(0.005)
        finally:
            self._consumer.close()

    def seconds(self) -> float:
        """Wait for the goal; the elapsed seconds."""
        self.join()
        if self._elapsed is None:
            raise RuntimeError("the topic did not reach its goal in 10 minutes")
        return max(self._elapsed, 1e-3)


def _pass_through(kafka: KafkaSettings, topics: dict[str, str], n: int) -> None:
    consumer = Consumer(consumer_config(kafka, f"bench-copy-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topics["single"], p, 0) for p in range(PARTITIONS)])
    producer = Producer(producer_config(kafka))
    stop, copied = threading.Event(), 0
    try:
        for batch in consume_batches(consumer, stop):
            for msg in batch:
                produce(
                    producer,
                    topics["copy"],
                    msg.value() or b"",
                    msg.key(),
                    partition=msg.partition(),
                )
            store_processed(consumer, batch)
            copied += len(batch)
            if copied >= n:
                stop.set()
        producer.flush(60)
    finally:
        consumer.close()
