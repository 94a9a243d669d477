"""Per-event learning throughput, end to end from Kafka, beside Vowpal Wabbit and River.

One stream (logistic labels, 32 dense features) is produced to a fresh topic, one `Sample`
per record with the headers ingestion forwards, and again as columnar `SampleBatch` records
of 1,000 rows. In the same run, as many rounds as measures, alternating (each measure takes
every position once), medians reported:
- the trainer service's own loop (`TrainerLoop` as deployed: stream filter, per-partition
  cuts, offsets, checkpoints every 100k events / 10 s; no registry), per event (batch 1,
  compiled path), on the single-sample topic and on the columnar one;
- a bare consume -> decode -> learn loop (the learner and decoder alone);
- Vowpal Wabbit's command-line learner on the same events (`python -m vowpalwabbit`, text
  parsing included, its start-up measured on an empty file and subtracted).
Once each: mini-batches of 256 (torch path), River's `learn_one` and a naive torch loop
(`backward(); step()` per event) on a slice. Each Kafka measure is timed from its consumer's
first event learned to the last (the loops) or from its first fetched batch (the bare loop),
after a warm-up that loads the compiled code, with the heap settled as the services settle
it (`shared.lifecycle.settle_heap`).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from services.trainer.app import build
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Batch, Learner
from services.trainer.settings import TrainerSettings
from shared import samples
from shared.fakes import FakeMessage
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches
from shared.kafka.producer import delivering, produce
from shared.lifecycle import STREAM_YOUNG_THRESHOLD, settle_heap
from shared.settings import TopicSettings
from streamlearn.client.producer import SampleProducer
from streamlearn.v1 import sample_pb2

FEATURES = 32
LR = 0.01
# The trainer's own fetch size: with the 1 MiB default, fetch round trips cap a busy
# consumer near 130k events/s on 2 cores.
MAX_FETCH = TrainerSettings.model_fields["fetch_partition_bytes"].default


_HEADERS = [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)]


def run(ctx: BenchContext) -> list[Figure]:
    """Kafka-fed streamlearn vs VW (medians of alternated rounds), River and naive torch."""
    n = ctx.count(500_000)
    x, y = stream(n)
    single, columnar = (f"bench.trainer.{kind}.{uuid.uuid4().hex[:8]}" for kind in "sc")
    ensure_topics(
        AdminClient(ctx.kafka.client_config()), [TopicSpec(single, 1), TopicSpec(columnar, 1)]
    )
    produce_stream(ctx, single, x, y)
    produce_columns(ctx, columnar, x, y)
    from_kafka(ctx, single, min(n, 1000), batch_size=1)  # compile and load outside the timing
    settle_heap(STREAM_YOUNG_THRESHOLD)
    with tempfile.TemporaryDirectory() as tmp:
        vw = _VowpalWabbit(Path(tmp), x, y)
        measures: dict[str, Callable[[], float]] = {
            "service": lambda: service_loop(ctx, single, n, from_first=True),
            "columnar": lambda: service_loop(ctx, columnar, n, from_first=True),
            "bare": lambda: from_kafka(ctx, single, n, batch_size=1),
            "vw": vw.rate,
        }
        rates = alternated(measures, len(measures))
    mini_batch = from_kafka(ctx, single, n, batch_size=256)
    part = min(n, 50_000)
    river = _river(x[:part], y[:part])
    naive = _naive_torch(x[: min(n, 20_000)], y[: min(n, 20_000)])
    vw_rate = rates["vw"]
    each = f"(median of {len(measures)})"
    return [
        Figure(f"per event from Kafka, trainer loop {each}", rates["service"], "events/s",
               "VW command line", vw_rate),
        Figure(f"per event from Kafka, consume-decode-learn {each}", rates["bare"], "events/s",
               "VW command line", vw_rate),
        Figure(f"per event from SampleBatch records, trainer loop {each}", rates["columnar"],
               "events/s", "VW command line", vw_rate),
        Figure("per event from Kafka, trainer loop", rates["service"], "events/s",
               "River learn_one", river),
        Figure("mini-batch 256, from Kafka", mini_batch, "events/s", "River learn_one", river),
        Figure("naive torch per event (in memory)", naive, "events/s", "River learn_one", river),
    ]  # fmt: skip


def alternated(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each measure over `rounds`, each round starting one measure further on.

    On a 2-core box the broker's pauses otherwise favour whichever runs first.
    """
    names = list(measures)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(measures[name]())
    return {name: statistics.median(values) for name, values in results.items()}


def stream(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    w = rng.normal(size=FEATURES)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.int64)
    return x, y


def produce_stream(ctx: BenchContext, topic: str, x: np.ndarray, y: np.ndarray) -> None:
    """One `Sample` per record, with the content-type header ingestion forwards."""
    producer = Producer(producer_config(ctx.kafka))
    with delivering(producer) as report:
        for i in range(len(y)):
            sample = sample_pb2.Sample(
                event_id=str(i),
                key=f"k{i % 64}",
                stream="bench",
                dense=x[i].tolist(),
                class_index=int(y[i]),
            )
            value = sample.SerializeToString()
            produce(producer, topic, value, partition=0, headers=_HEADERS, on_delivery=report)


def produce_columns(ctx: BenchContext, topic: str, x: np.ndarray, y: np.ndarray) -> None:
    """The same events as `SampleBatch` records of 1,000 rows (the SDK's columnar path)."""
    with SampleProducer(kafka=ctx.kafka, topic=topic, stream="bench") as producer:
        for start in range(0, len(y), 1000):
            rows = slice(start, start + 1000)
            keys = [f"k{i % 64}" for i in range(start, start + len(y[rows]))]
            producer.send_columns(x[rows], y[rows], keys=keys)


def service_loop(ctx: BenchContext, topic: str, n: int, *, from_first: bool = False) -> float:
    """The trainer service's own loop (checkpoints and offsets as deployed; no registry).

    Timed from the loop's creation (joining the group included), or with `from_first` from
    its first event learned to its last, as a throughput.
    """
    with tempfile.TemporaryDirectory() as state:
        settings = TrainerSettings(
            kafka=ctx.kafka,
            topics=TopicSettings(train=topic, metrics=f"{topic}.metrics"),
            state_dir=Path(state),
            consumer_group=f"bench-{uuid.uuid4().hex[:8]}",
            config=config(1),
            stream="bench",
            metrics_port=0,
        )
        started = time.perf_counter()
        loop = build(settings)
        stop = threading.Event()
        worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        worker.start()
        before = 0
        while from_first and loop.learner.applied == 0 and worker.is_alive():
            time.sleep(0.0005)
        if from_first:
            started, before = time.perf_counter(), loop.learner.applied
        while loop.learner.applied < n and worker.is_alive():
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        stop.set()
        worker.join(60)
    if loop.learner.applied < n:  # died, or refused events: no rate to report
        raise RuntimeError(f"the trainer loop learned {loop.learner.applied} of {n} events")
    return (n - before) / elapsed


def config(batch_size: int) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind="logistic", features=FEATURES),
        optimizer=OptimizerSpec(name="sgd", lr=LR),
        batch_size=batch_size,
    )


def from_kafka(
    ctx: BenchContext, topic: str, n: int, batch_size: int, from_creation: bool = False
) -> float:
    """Consume, decode and learn every event; events/s from the first record to the last.

    With `from_creation`, the clock starts when the consumer is created and the partition
    is assigned directly (no group), as a replay reads.
    """
    learner = Learner(config(batch_size))
    warm_x, warm_y = stream(batch_size)
    learner.learn(_in_memory_batch(warm_x, warm_y))  # compile/initialise outside the timing
    warm = sample_pb2.Sample(dense=warm_x[0].tolist(), class_index=1).SerializeToString()
    decode([FakeMessage(topic, 0, 0, None, warm)], "binary", FEATURES)  # type: ignore[list-item]
    created = time.perf_counter()
    consumer = Consumer(
        consumer_config(
            ctx.kafka, f"bench-{uuid.uuid4().hex[:8]}", max_partition_fetch_bytes=MAX_FETCH
        )
    )
    if from_creation:
        consumer.assign([TopicPartition(topic, 0, 0)])
    else:
        consumer.subscribe([topic])
    seen, first, stop = 0, created if from_creation else 0.0, threading.Event()
    try:
        for records in consume_batches(consumer, stop, batch_size=5000):
            first = first or time.perf_counter()
            batch, _ = decode(records, "binary", FEATURES)
            learner.learn(batch)
            seen += len(records)
            if seen >= n:
                stop.set()
        return n / (time.perf_counter() - first)
    finally:
        consumer.close()


def _in_memory_batch(x: np.ndarray, y: np.ndarray) -> Batch:
    return Batch(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)))


def _river(x: np.ndarray, y: np.ndarray) -> float:
    from river import linear_model, optim

    model = linear_model.LogisticRegression(optimizer=optim.SGD(LR))
    rows = [dict(enumerate(row.tolist())) for row in x]
    labels = [bool(v) for v in y]
    started = time.perf_counter()
    for row, label in zip(rows, labels, strict=True):
        model.learn_one(row, label)
    return len(rows) / (time.perf_counter() - started)


class _VowpalWabbit:
    """VW's command line on the events as VW text, its start-up measured and subtracted."""

    ARGS = ("--loss_function", "logistic", "--learning_rate", str(LR), "--quiet",
            "--no_stdin", "--noconstant")  # fmt: skip

    def __init__(self, folder: Path, x: np.ndarray, y: np.ndarray) -> None:
        self.data, self.empty, self.events = folder / "data.vw", folder / "empty.vw", len(y)
        with self.data.open("w") as out:
            for row, label in zip(x, y, strict=True):
                features = " ".join(f"{j}:{v:.6g}" for j, v in enumerate(row))
                out.write(f"{1 if label else -1} | {features}\n")
        self.empty.write_text("")

    def rate(self) -> float:
        """Events per second of one learning pass."""
        command = [sys.executable, "-m", "vowpalwabbit", *self.ARGS, "-d"]
        startup = _timed([*command, str(self.empty)])
        total = _timed([*command, str(self.data)])
        return self.events / max(total - startup, 1e-9)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _naive_torch(x: np.ndarray, y: np.ndarray) -> float:
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    started = time.perf_counter()
    for i in range(len(ys)):
        optimizer.zero_grad()
        loss_fn(model(xs[i : i + 1]).squeeze(-1), ys[i : i + 1]).backward()
        optimizer.step()
    return len(ys) / (time.perf_counter() - started)
