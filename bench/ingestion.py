"""Ingestion throughput beside a plain confluent-kafka pass-through on the same records.

The same stream (binary labels, 32 features) is produced once to raw topics, as one record
per sample and as columnar batches of 1,000 rows (three times as many samples: a batch is
routed so fast that fewer would time little more than one fetch). Each round, alternated,
drains them into fresh output topics:
- pass-through: a confluent-kafka loop that copies the single-sample records to an output
  topic unchanged (batched consume, idempotent produce, no checks);
- ingestion (a separate process, the engine `INGESTION_ENGINE` selects, `kafka` by default:
  validation, de-duplication, routing with headers) in a fresh consumer group, once per
  raw topic.
Rates count samples from the first output record to the last one; the figures are the
medians of the rounds. The ingestion process's resident memory (VmRSS) is read when its
first output appears and when its last one does, on the single-sample run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from bench.processes import rss_kib, service
from services.ingestion.names import SERVICE
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
ROUNDS = 3
BATCH_ROWS = 1000
COLUMNAR_TIMES = 3  # columnar runs carry this many times the samples


@dataclass
class _Run:
    """One drain: samples per second, and the drainer's RSS (KiB) at its first/last output."""

    rate: float
    rss_start_kib: int = 0
    rss_end_kib: int = 0


def run(ctx: BenchContext) -> list[Figure]:
    """Drain the same samples through ingestion (single and columnar) and a pass-through."""
    n = ctx.count(100_000)
    columnar = n * COLUMNAR_TIMES
    rounds = max(ROUNDS, ctx.count(ROUNDS))
    prefix = f"bench.ingestion.{uuid.uuid4().hex[:8]}"
    topics = {name: f"{prefix}.{name}" for name in ("single", "batched", "streams")}
    outputs = [
        {name: f"{prefix}.{r}.{name}" for name in ("copy", "train", "dlq", "train2")}
        for r in range(rounds)
    ]
    admin = AdminClient(ctx.kafka.client_config())
    every = [*topics.values(), *(t for names in outputs for t in names.values())]
    ensure_topics(admin, [TopicSpec(t, PARTITIONS) for t in every])
    dataset = Synthetic("binary", features=FEATURES)
    publish_definition(ctx.kafka, topics["streams"], dataset.definition("bench"))
    _produce(ctx.kafka, topics["single"], dataset, n, batched=False)
    _produce(ctx.kafka, topics["batched"], dataset, columnar, batched=True)
    copies: list[_Run] = []
    singles: list[_Run] = []
    batches: list[_Run] = []
    records = -(-columnar // BATCH_ROWS)
    for out in outputs:  # alternated: each round drains all three
        copies.append(_pass_through(ctx.kafka, topics["single"], out["copy"], n))
        singles.append(_ingest(ctx.kafka, topics, "single", out["train"], out["dlq"], n, n))
        batches.append(
            _ingest(ctx.kafka, topics, "batched", out["train2"], out["dlq"], columnar, records)
        )
    baseline = statistics.median(c.rate for c in copies)
    single = statistics.median(s.rate for s in singles)
    engine = os.environ.get("INGESTION_ENGINE", "kafka")
    suffix = f"({engine} engine, median of {rounds})"
    return [
        Figure(
            f"ingestion, one record per sample {suffix}",
            single,
            "samples/s",
            "pass-through",
            baseline,
        ),
        Figure(
            f"ingestion, columnar batches of {BATCH_ROWS:,} {suffix}",
            statistics.median(b.rate for b in batches),
            "samples/s",
            "pass-through",
            baseline,
        ),
        Figure(
            f"ingestion RSS at its last output, one record per sample (of {n:,}; median)",
            statistics.median(s.rss_end_kib for s in singles) / 1024,
            "MiB",
            "RSS at its first output",
            statistics.median(s.rss_start_kib for s in singles) / 1024,
            higher_is_better=False,
        ),
    ]


def _produce(kafka: KafkaSettings, topic: str, dataset: Synthetic, n: int, batched: bool) -> None:
    with SampleProducer(kafka=kafka, topic=topic, stream="bench") as producer:
        for x, y in dataset.chunks(n, chunk=BATCH_ROWS):
            keys = [f"k{i % 100}" for i in range(len(x))]
            if batched:
                producer.send_columns(x, y, keys=keys)
                continue
            for i in range(len(x)):
                producer.send({"features": x[i], "label": int(y[i]), "key": keys[i]})


def _ingest(
    kafka: KafkaSettings,
    topics: dict[str, str],
    raw: str,
    train: str,
    dlq: str,
    n: int,
    records: int,
) -> _Run:
    port = free_port()
    env = {
        "INGESTION_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "INGESTION_TOPICS__RAW": topics[raw],
        "INGESTION_TOPICS__TRAIN": train,
        "INGESTION_TOPICS__DLQ": dlq,
        "INGESTION_TOPICS__STREAMS": topics["streams"],
        "INGESTION_CONSUMER_GROUP": f"{train}.group",
        "INGESTION_GRPC_PORT": str(port),
        "INGESTION_METRICS_PORT": "0",
        "INGESTION_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ingestion.log"
        watch = _Watch(kafka, train, records)
        with service("services.ingestion", env, f"127.0.0.1:{port}", SERVICE, log) as process:
            watch.pid = process.pid
            seconds = watch.seconds()
            return _Run(n / seconds, watch.rss_kib[0], watch.rss_kib[-1])


class _Watch(threading.Thread):
    """Times a topic growing by `records`: from its first new record to the last one.

    With `pid` set, the resident memory of that process is read at both moments.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, records: int) -> None:
        super().__init__(daemon=True)
        # One consumer polls the end offsets: creating one per poll would load the very
        # machine being measured.
        self._consumer = Consumer(consumer_config(kafka, "bench-ingestion-watch"))
        self._topic = topic
        self._before = sum(high_watermarks(self._consumer, topic).values())
        self._goal = self._before + records
        self._elapsed: float | None = None
        self.pid: int | None = None
        self.rss_kib: list[int] = []
        self.start()

    def run(self) -> None:
        first, deadline = 0.0, time.monotonic() + 600
        try:
            while time.monotonic() < deadline:
                count = sum(high_watermarks(self._consumer, self._topic).values())
                now = time.perf_counter()
                if not first and count > self._before:
                    first = now
                if first and not self.rss_kib:  # (the pid may come a moment later)
                    self._read_rss()
                if count >= self._goal:
                    self._elapsed = now - first
                    self._read_rss()
                    return
                time.sleep(0.005)
        finally:
            self._consumer.close()

    def _read_rss(self) -> None:
        if self.pid is not None:
            self.rss_kib.append(rss_kib(self.pid))

    def seconds(self) -> float:
        """Wait for the goal; the elapsed seconds."""
        self.join()
        if self._elapsed is None:
            raise RuntimeError("the topic did not reach its goal in 10 minutes")
        return max(self._elapsed, 1e-3)


def _pass_through(kafka: KafkaSettings, source: str, target: str, n: int) -> _Run:
    watch = _Watch(kafka, target, n)
    consumer = Consumer(consumer_config(kafka, f"bench-copy-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    producer = Producer(producer_config(kafka))
    stop, copied = threading.Event(), 0
    try:
        for batch in consume_batches(consumer, stop):
            for msg in batch:
                produce(producer, target, msg.value() or b"", msg.key(), partition=msg.partition())
            store_processed(consumer, batch)
            copied += len(batch)
            if copied >= n:
                stop.set()
        producer.flush(60)
    finally:
        consumer.close()
    return _Run(n / watch.seconds())
