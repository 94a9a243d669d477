"""Joiner throughput beside a transactional confluent-kafka pass-through on the same records.

N predictions (`PredictionRecord`s as inference logs them: 32 positional dense features, a
probability output, no sparse ids) and one binary feedback for each (event time 0-30 s
after its prediction, inside the default one-hour window) are produced once to two input
topics of one partition each (as `bench ingestion`: one partition, one process, so the
figure is per process; the joiner needs both inputs co-partitioned, which one partition is).
Both inputs are read side by side, so the feedback (a quarter of a prediction's bytes)
often comes before its prediction and waits for it: both join paths are exercised.

Each round, alternated, drains both inputs into fresh output topics:
- pass-through (the baseline): a confluent-kafka loop that copies every record of both
  inputs to an output topic in transactions (consumed offsets included) committed every
  `COMMIT_INTERVAL_MS`, the joiner's guarantees minus the join;
- plain pass-through: the same copy without transactions (what the guarantees cost);
- the joiner (`python -m services.joiner`, its own topics, group and transactional id,
  the same commit interval) in a fresh consumer group; its `max_pending` is raised above N
  so that no early feedback overflows while the feedback topic runs ahead.
Outputs are read `read_committed`: a rate is the records expected (2N copies, N joined
samples) divided by the time from the first output's production (its CreateTime) to the
moment the last one is read. A joined event consumes two input records and writes a sample
and a changelog entry. The joiner's resident memory (VmRSS) is read when its first output
is seen (librdkafka's prefetched input counts then) and at its last. Figures are medians of
the rounds (`ROUNDS`, fixed; `--scale` changes N, default 200,000 events: about 80 s on
two cores).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from bench.core import BenchContext, Figure
from bench.processes import service
from services.joiner.names import HEALTH_NAME
from shared.feedback import (
    Feedback,
    Label,
    PredictionRecord,
    encode_feedback,
    encode_prediction,
)
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import high_watermarks
from shared.net import free_port
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.v1 import stream_pb2

BASE_EVENTS = 200_000
FEATURES = 32
PARTITIONS = 1
ROUNDS = 3
COMMIT_INTERVAL_MS = 100
STREAM = "bench"
MAX_DELAY_MS = 30_000  # feedback event time after its prediction's
TAKE = 1000  # records per consume() call, as the joiner takes them
TXN_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 600.0
Report = Callable[[KafkaError | None, Message], None]


@dataclass
class _Run:
    """One drain: records (or joined events) per second, and the drainer's RSS (KiB)."""

    rate: float
    rss_start_kib: int = 0
    rss_end_kib: int = 0


@dataclass(frozen=True)
class Inputs:
    """The topics every round reads."""

    predictions: str
    feedback: str
    streams: str


def run(ctx: BenchContext) -> list[Figure]:
    """Drain the same predictions and feedback through the joiner and two pass-throughs."""
    n = ctx.count(BASE_EVENTS)
    prefix = f"bench.join.{uuid.uuid4().hex[:8]}"
    inputs = Inputs(f"{prefix}.predictions", f"{prefix}.feedback", f"{prefix}.streams")
    copies = [(f"{prefix}.{r}.copy", f"{prefix}.{r}.plain") for r in range(ROUNDS)]
    admin = AdminClient(ctx.kafka.client_config())
    every = [inputs.predictions, inputs.feedback, *(t for pair in copies for t in pair)]
    ensure_topics(admin, [TopicSpec(t, PARTITIONS) for t in every])
    ensure_topics(admin, [TopicSpec(inputs.streams, 1)])
    publish_definition(ctx.kafka, inputs.streams, definition())
    _produce(ctx.kafka, inputs, n)
    transactional: list[_Run] = []
    plain: list[_Run] = []
    joins: list[_Run] = []
    for r, (copy, bare) in enumerate(copies):  # alternated: each round drains all three
        transactional.append(_pass_through(ctx.kafka, inputs, copy, 2 * n, transactional=True))
        plain.append(_pass_through(ctx.kafka, inputs, bare, 2 * n, transactional=False))
        joins.append(_join(ctx.kafka, inputs, f"{prefix}.{r}", n))
    return figures(n, transactional, plain, joins)


def figures(
    n: int, transactional: list[_Run], plain: list[_Run], joins: list[_Run]
) -> list[Figure]:
    """The medians of the rounds as figures, each beside its baseline."""
    suffix = f"({n:,} events, median of {len(joins)})"
    baseline = statistics.median(r.rate for r in transactional)
    return [
        Figure(
            f"joiner, joined events/s {suffix}",
            statistics.median(r.rate for r in joins),
            "events/s",
            "transactional pass-through (records/s; an event is 2)",
            baseline,
        ),
        Figure(
            f"transactional pass-through {suffix}",
            baseline,
            "records/s",
            "plain pass-through",
            statistics.median(r.rate for r in plain),
        ),
        Figure(
            f"joiner RSS at its last output {suffix}",
            statistics.median(r.rss_end_kib for r in joins) / 1024,
            "MiB",
            "RSS at its first output",
            statistics.median(r.rss_start_kib for r in joins) / 1024,
            higher_is_better=False,
        ),
    ]


def definition() -> stream_pb2.StreamDefinition:
    """The stream the joined samples are checked against (binary, no negatives)."""
    return stream_pb2.StreamDefinition(
        name=STREAM, dense_dim=FEATURES, label_kind=stream_pb2.LabelKind.LABEL_KIND_BINARY
    )


def event(i: int, base_ms: int, rng: random.Random) -> tuple[bytes, bytes]:
    """Prediction `i` as inference logs it and its feedback, as encoded bytes."""
    event_id = f"ev-{i:09d}"
    dense = tuple(rng.gauss(0.0, 1.0) for _ in range(FEATURES))
    p = rng.random()
    timestamp = base_ms + i
    prediction = PredictionRecord(
        event_id, STREAM, "bench-model", 7, dense, (), (("probability", (p,)),), timestamp
    )
    label = Label.class_index(int(rng.random() < p))
    feedback = Feedback(event_id, STREAM, label, timestamp + rng.randrange(MAX_DELAY_MS))
    return encode_prediction(prediction), encode_feedback(feedback)


def _produce(kafka: KafkaSettings, inputs: Inputs, n: int) -> None:
    producer = Producer(producer_config(kafka))
    rng, base_ms = random.Random(16), int(time.time() * 1000)
    failed: list[KafkaError] = []

    def report(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            failed.append(error)

    for i in range(n):
        prediction, feedback = event(i, base_ms, rng)
        key = f"ev-{i:09d}".encode()
        for topic, value in ((inputs.predictions, prediction), (inputs.feedback, feedback)):
            _send(producer, topic, value, key, on_delivery=report)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"inputs not written: {failed[:3] or 'flush timed out'}")


def _send(producer: Producer, topic: str, value: bytes, key: bytes, on_delivery: Report) -> None:
    """Produce to partition 0, letting deliveries drain while the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, 0, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def _join(kafka: KafkaSettings, inputs: Inputs, name: str, n: int) -> _Run:
    port = free_port()
    train, dlq = f"{name}.train", f"{name}.dlq"
    env = {
        "JOINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "JOINER_TOPICS__PREDICTIONS": inputs.predictions,
        "JOINER_TOPICS__FEEDBACK": inputs.feedback,
        "JOINER_TOPICS__STREAMS": inputs.streams,
        "JOINER_TOPICS__TRAIN": train,
        "JOINER_TOPICS__DLQ": dlq,
        "JOINER_TOPICS__JOINER_STATE": f"{name}.state",
        "JOINER_TOPICS__PARTITIONS": str(PARTITIONS),
        "JOINER_CONSUMER_GROUP": f"{name}.group",
        "JOINER_TRANSACTIONAL_ID": f"{name}.joiner",
        "JOINER_COMMIT_INTERVAL_MS": str(COMMIT_INTERVAL_MS),
        # Feedback runs ahead of its predictions here: none may overflow while it waits.
        "JOINER_MAX_PENDING": str(2 * n),
        "JOINER_GRPC_PORT": str(port),
        "JOINER_METRICS_PORT": "0",
        "JOINER_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "joiner.log"
        env["JOINER_STATE_DIR"] = tmp
        # The joiner creates its output topics; the watch reads from their beginning.
        with service("services.joiner", env, f"127.0.0.1:{port}", HEALTH_NAME, log) as process:
            watch = _Watch(kafka, train, n, process.pid)
            while watch.is_alive():
                watch.join(0.5)
                if process.poll() is not None:
                    raise RuntimeError(f"the joiner exited:\n{log.read_text()[-3000:]}")
            seconds = watch.seconds()
    dead = _records_written(kafka, dlq)
    if dead:  # every event has its feedback in the window: a dead letter is a wrong result
        raise RuntimeError(f"the joiner dead-lettered {dead} records of {n:,} joinable events")
    return _Run(n / seconds, watch.rss_kib[0], watch.rss_kib[-1])


def _records_written(kafka: KafkaSettings, topic: str) -> int:
    """Offsets taken on `topic` (records and transaction markers); 0: nothing was written."""
    consumer = Consumer(consumer_config(kafka, f"bench-join-probe-{uuid.uuid4().hex[:6]}"))
    try:
        return sum(high_watermarks(consumer, topic).values())
    finally:
        consumer.close()


def _pass_through(
    kafka: KafkaSettings, inputs: Inputs, target: str, total: int, transactional: bool
) -> _Run:
    """Copy both inputs to `target` (in transactions with their offsets when `transactional`)."""
    watch = _Watch(kafka, target, total)
    group = f"{target}.group"
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    sources = (inputs.predictions, inputs.feedback)
    consumer.assign([TopicPartition(t, p, 0) for t in sources for p in range(PARTITIONS)])
    txn_id = f"{target}.txn" if transactional else None
    producer = Producer(producer_config(kafka, transactional_id=txn_id))
    copy = _Copy(consumer, producer, target, transactional)
    try:
        copy.drain(total)
    finally:
        consumer.close()
    return _Run(total / watch.seconds())


class _Copy:
    """The pass-through loop: consume, produce each record unchanged, commit on an interval."""

    def __init__(
        self, consumer: Consumer, producer: Producer, target: str, transactional: bool
    ) -> None:
        self._consumer, self._producer, self._target = consumer, producer, target
        self._transactional = transactional
        self._offsets: dict[tuple[str, int], int] = {}

    def drain(self, total: int) -> None:
        """Copy `total` records, then commit (or flush) what is left."""
        if self._transactional:
            self._producer.init_transactions(TXN_TIMEOUT_S)
            self._producer.begin_transaction()
        copied, commit_at = 0, time.monotonic() + COMMIT_INTERVAL_MS / 1000
        while copied < total:
            for msg in self._consumer.consume(TAKE, 0.1):
                if msg.error() is None:
                    self._copy(msg)
                    copied += 1
            if time.monotonic() >= commit_at:
                commit_at = time.monotonic() + COMMIT_INTERVAL_MS / 1000
                self._commit(again=True)
        self._commit(again=False)

    def _copy(self, msg: Message) -> None:
        topic, partition = msg.topic() or "", msg.partition() or 0
        while True:
            try:
                self._producer.produce(
                    self._target, msg.value(), msg.key(), partition, headers=msg.headers()
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._offsets[(topic, partition)] = (msg.offset() or 0) + 1

    def _commit(self, again: bool) -> None:
        if not self._transactional:
            self._producer.poll(0)
            if not again:
                self._producer.flush(60)
            return
        if self._offsets:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._offsets.items())]
            self._producer.send_offsets_to_transaction(
                offsets, self._consumer.consumer_group_metadata(), TXN_TIMEOUT_S
            )
            self._offsets.clear()
        self._producer.commit_transaction(TXN_TIMEOUT_S)
        if again:
            self._producer.begin_transaction()


class _Watch(threading.Thread):
    """Counts the committed records of a topic (read `read_committed`) until `goal`.

    The time runs from the moment the first record was produced (its CreateTime: the clock
    of this machine, where the local broker and the drainer run) to the moment the goal-th
    one is read: a transaction's records become visible only at its commit, so timing from
    the first one seen would leave out the whole first transaction. With `pid`, the
    resident memory of that process is read when the first record is seen and at the goal.
    (Offsets cannot count the records of a transactional topic: commit markers take
    offsets too.)
    """

    def __init__(self, kafka: KafkaSettings, topic: str, goal: int, pid: int | None = None) -> None:
        super().__init__(daemon=True)
        group = f"bench-join-watch-{uuid.uuid4().hex[:6]}"
        # A short fetch wait: the first committed record is seen when it is committed.
        config = consumer_config(kafka, group, enable_auto_commit=False, fetch_wait_max_ms=20)
        self._consumer = Consumer(config)
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )
        self._goal, self._pid = goal, pid
        self._elapsed: float | None = None
        self.rss_kib: list[int] = []
        self.start()

    def run(self) -> None:
        seen, first_ms, deadline = 0, 0, time.monotonic() + WATCH_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                batch = [m for m in self._consumer.consume(TAKE, 0.05) if m.error() is None]
                if batch and not first_ms:
                    first_ms = batch[0].timestamp()[1]
                    self._read_rss()
                seen += len(batch)
                if seen >= self._goal:
                    self._elapsed = time.time() - first_ms / 1000
                    self._read_rss()
                    return
        finally:
            self._consumer.close()

    def _read_rss(self) -> None:
        if self._pid is not None:
            with open(f"/proc/{self._pid}/status", encoding="ascii") as status:
                self.rss_kib.append(int(status.read().split("VmRSS:")[1].split()[0]))

    def seconds(self) -> float:
        """Wait for the goal; the elapsed seconds."""
        self.join()
        if self._elapsed is None:
            raise RuntimeError(f"the topic did not reach {self._goal:,} records in time")
        return max(self._elapsed, 1e-3)
