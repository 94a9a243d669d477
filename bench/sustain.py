"""Ingestion alone, sustained: 50,000 single-sample records/s for minutes, lag and memory.

`bench freshness` runs every service on the box at that rate and saturates two cores; this
one runs the ingestion service alone (its own process, fresh topics) fed by the SDK's
`send` at `RATE` records/s for `max(20, 60 x scale)` seconds (`--scale 10`: ten minutes,
well past the minute its de-duplication memory takes to reach its 3-million-id cap). Every
second the training topic's end is compared with the raw topic's: the lag, in seconds of
input. Figures: the records routed per second against those sent (keeping up: ratio 1), the
p99 and last lag, and the process's resident memory at the end against its start and
against half way.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from bench.processes import rss_kib, service
from services.ingestion.names import SERVICE
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config
from shared.kafka.consumer import high_watermarks
from shared.net import free_port
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer
from streamlearn.v1 import sample_pb2

RATE = 50_000
BURST = 500


@dataclass(frozen=True)
class _Run:
    lags: list[int]  # records behind, once a second and at the end
    rss: list[int]  # KiB at the start, half way, the end
    sent: float  # records/s
    routed: float  # records/s


def run(ctx: BenchContext) -> list[Figure]:
    """Feed ingestion alone at RATE for the scaled duration; lag and RSS against baselines."""
    seconds = max(20.0, 60.0 * ctx.scale)
    prefix = f"bench.sustain.{uuid.uuid4().hex[:8]}"
    topics = {name: f"{prefix}.{name}" for name in ("raw", "train", "dlq", "streams")}
    ensure_topics(
        AdminClient(ctx.kafka.client_config()), [TopicSpec(t, 1) for t in topics.values()]
    )
    dataset = Synthetic("binary", features=32)
    publish_definition(ctx.kafka, topics["streams"], dataset.definition("bench"))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, service(
        "services.ingestion", _env(ctx.kafka, topics, prefix, port), f"127.0.0.1:{port}",
        SERVICE, Path(tmp) / "ingestion.log",
    ) as process:  # fmt: skip
        watch = Consumer(consumer_config(ctx.kafka, f"{prefix}.watch"))
        try:
            fed = _feed(ctx.kafka, topics, dataset, seconds, watch, process.pid)
        finally:
            watch.close()
    lags = np.array(fed.lags) / RATE
    label = f"ingestion alone, {RATE:,} records/s for {seconds:.0f} s"
    rss = fed.rss
    return [
        Figure(f"{label}: routed/s", fed.routed, "records/s", "sent/s", fed.sent),
        Figure(
            f"{label}: lag p99 (last {lags[-1]:.3f} s)",
            float(np.percentile(lags, 99)),
            "s",
            "one second of input",
            1.0,
            higher_is_better=False,
        ),
        Figure(f"{label}: RSS at the end", rss[2] / 1024, "MiB", "RSS at the start",
               rss[0] / 1024, higher_is_better=False),
        Figure(f"{label}: RSS at the end", rss[2] / 1024, "MiB", "RSS half way",
               rss[1] / 1024, higher_is_better=False),
    ]  # fmt: skip


def _env(kafka: KafkaSettings, topics: dict[str, str], prefix: str, port: int) -> dict[str, str]:
    return {
        "INGESTION_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "INGESTION_TOPICS__RAW": topics["raw"],
        "INGESTION_TOPICS__TRAIN": topics["train"],
        "INGESTION_TOPICS__DLQ": topics["dlq"],
        "INGESTION_TOPICS__STREAMS": topics["streams"],
        "INGESTION_CONSUMER_GROUP": f"{prefix}.group",
        "INGESTION_GRPC_PORT": str(port),
        "INGESTION_METRICS_PORT": "0",
        "INGESTION_LOG_LEVEL": "WARNING",
    }


def _feed(
    kafka: KafkaSettings,
    topics: dict[str, str],
    dataset: Synthetic,
    seconds: float,
    watch: Consumer,
    pid: int,
) -> _Run:
    """Send paced samples; every second, the lag (records) of the training topic behind."""
    lags: list[int] = []
    bursts = int(seconds * RATE / BURST)
    with SampleProducer(kafka=kafka, topic=topics["raw"], stream="bench") as producer:
        chunks = dataset.chunks(10**12, BURST)
        x, y = next(chunks)  # warm-up: the group joined and the first records routed
        producer.send_columns(x, y, keys=["warm-up"] * BURST)
        deadline = time.monotonic() + 120
        while sum(high_watermarks(watch, topics["train"]).values()) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("ingestion routed nothing within 120 s")
            time.sleep(0.1)
        rss = [rss_kib(pid)]
        started = next_look = time.monotonic()
        for n in range(bursts):
            rows, labels = (a.tolist() for a in next(chunks))
            for i in range(BURST):
                event = n * BURST + i
                producer.send(
                    sample_pb2.Sample(
                        event_id=f"e{event}", key=f"k{event % 12}", dense=rows[i],
                        class_index=int(labels[i]),
                    )
                )  # fmt: skip
            if n == bursts // 2:
                rss.append(rss_kib(pid))
            if time.monotonic() >= next_look:
                lags.append(_lag(watch, topics))
                next_look += 1.0
            ahead = started + (n + 1) * BURST / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        elapsed = time.monotonic() - started
    lags.append(_lag(watch, topics))
    rss.append(rss_kib(pid))
    routed = sum(high_watermarks(watch, topics["train"]).values()) - 1  # (the warm-up record)
    return _Run(lags, rss, bursts * BURST / elapsed, routed / elapsed)


def _lag(watch: Consumer, topics: dict[str, str]) -> int:
    raw = sum(high_watermarks(watch, topics["raw"]).values())
    return raw - sum(high_watermarks(watch, topics["train"]).values())
