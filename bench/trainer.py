"""Per-event learning throughput, end to end from Kafka, beside River and Vowpal Wabbit.

One stream (logistic labels, 32 dense features) is produced to a fresh topic. streamlearn
consumes it from Kafka, decodes each `Sample` and learns event by event (batch 1, compiled
path), and again with mini-batches of 256 (torch path). River's `learn_one` and Vowpal
Wabbit's command-line learner (`python -m vowpalwabbit`, text parsing included) learn the
same events in the same run; so does the naive torch loop (`backward(); step()` per event).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Batch, Learner
from services.trainer.settings import TrainerSettings
from shared.fakes import FakeMessage
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches
from shared.kafka.producer import delivering, produce
from streamlearn.v1 import sample_pb2

FEATURES = 32
LR = 0.01
# The trainer's own fetch size: with the 1 MiB default, fetch round trips cap a busy
# consumer near 130k events/s on 2 cores.
MAX_FETCH = TrainerSettings.model_fields["fetch_partition_bytes"].default


def run(ctx: BenchContext) -> list[Figure]:
    """Kafka-fed streamlearn vs River, VW and naive torch on the same events."""
    n = ctx.count(200_000)
    x, y = stream(n)
    topic = f"bench.trainer.{uuid.uuid4().hex[:8]}"
    ensure_topics(AdminClient(ctx.kafka.client_config()), [TopicSpec(topic, 1)])
    produce_stream(ctx, topic, x, y)
    per_event = from_kafka(ctx, topic, n, batch_size=1)
    mini_batch = from_kafka(ctx, topic, n, batch_size=256)
    river, vw = _river(x, y), _vw(x, y)
    naive = _naive_torch(x[: min(n, 20_000)], y[: min(n, 20_000)])
    return [
        Figure("per-event, from Kafka", per_event, "events/s", "River learn_one", river),
        Figure("per-event, from Kafka", per_event, "events/s", "VW command line", vw),
        Figure("mini-batch 256, from Kafka", mini_batch, "events/s", "River learn_one", river),
        Figure("naive torch per event (in memory)", naive, "events/s", "River learn_one", river),
    ]


def stream(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    w = rng.normal(size=FEATURES)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.int64)
    return x, y


def produce_stream(ctx: BenchContext, topic: str, x: np.ndarray, y: np.ndarray) -> None:
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
            produce(producer, topic, sample.SerializeToString(), partition=0, on_delivery=report)


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


def _vw(x: np.ndarray, y: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data, empty = Path(tmp) / "data.vw", Path(tmp) / "empty.vw"
        with data.open("w") as out:
            for row, label in zip(x, y, strict=True):
                features = " ".join(f"{j}:{v:.6g}" for j, v in enumerate(row))
                out.write(f"{1 if label else -1} | {features}\n")
        empty.write_text("")
        args = [
            "--loss_function",
            "logistic",
            "--learning_rate",
            str(LR),
            "--quiet",
            "--no_stdin",
            "--noconstant",
        ]
        startup = _timed([sys.executable, "-m", "vowpalwabbit", "-d", str(empty), *args])
        total = _timed([sys.executable, "-m", "vowpalwabbit", "-d", str(data), *args])
    return len(y) / max(total - startup, 1e-9)


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
