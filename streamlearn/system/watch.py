"""Follow a running system from the outside: trainer metrics, versions, served predictions.

Used by the demo dashboard; each reader polls or follows on its own thread and keeps the
latest value, so the dashboard only reads snapshots.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from google.protobuf.message import DecodeError

# The joiner's outputs module is its wire contract (attribute names, dead-letter reasons):
# plain constants, no service code runs here.
from services.joiner.outputs import EXPIRED, LABEL_DELAY_MS, LATE, OUTCOME, UNKNOWN
from shared import samples
from shared.clients.registry import RegistryClient
from shared.errors import StreamlearnError
from shared.kafka.config import consumer_config
from shared.kafka.consumer import consume_ready, high_watermarks
from shared.settings import KafkaSettings
from streamlearn.client.inference import InferenceClient
from streamlearn.v1 import metrics_pb2, sample_pb2


@dataclass
class Served:
    """What inference answered for the held-out set at one moment."""

    at: float  # seconds since the watch began
    version: int
    accuracy: float


# The outcomes the joiner marks its samples with (beside the attributes imported above).
JOINED, NEGATIVE = "joined", "negative"
RECENT_DELAYS = 1000


@dataclass
class Joins:
    """What the joiner turned one stream's predictions and feedback into, since the watch began.

    Read from what the trainer reads (the committed training samples the joiner marks with
    their outcome and label delay) and from the dead letters, so it needs no metrics port.
    """

    joined: int = 0
    negatives: int = 0
    late: int = 0
    unknown: int = 0
    expired: int = 0
    recent_delays_ms: list[int] = field(default_factory=list)  # of the last joined samples

    @property
    def join_rate(self) -> float | None:
        """The share of closed predictions that got their label (None before any closed)."""
        closed = self.joined + self.negatives + self.expired
        return self.joined / closed if closed else None

    @property
    def mean_delay_s(self) -> float | None:
        """Mean label delay of the recent joined samples, in seconds."""
        delays = self.recent_delays_ms
        return sum(delays) / len(delays) / 1000 if delays else None

    def take_sample(self, sample: sample_pb2.Sample, stream: str) -> None:
        """Count one training sample, if the joiner wrote it for `stream`."""
        if sample.stream != stream:
            return
        outcome = sample.attributes.get(OUTCOME)
        if outcome == NEGATIVE:
            self.negatives += 1
        elif outcome == JOINED:
            self.joined += 1
            with contextlib.suppress(ValueError):
                self.recent_delays_ms.append(int(sample.attributes.get(LABEL_DELAY_MS, "")))
                del self.recent_delays_ms[:-RECENT_DELAYS]

    def take_dead_letter(self, reason: bytes | None) -> None:
        """Count one dead letter by its reason (the joiner's reasons; others are ignored)."""
        if reason == LATE.encode():
            self.late += 1
        elif reason == UNKNOWN.encode():
            self.unknown += 1
        elif reason == EXPIRED.encode():
            self.expired += 1


class JoinFollower:
    """Counts the joiner's outputs of one stream, from the topics' ends onwards."""

    def __init__(self, kafka: KafkaSettings, train: str, dlq: str, stream: str) -> None:
        self._consumer = Consumer(consumer_config(kafka, "streamlearn-watch"))
        assigned = [
            TopicPartition(topic, p, end)
            for topic in (train, dlq)
            for p, end in high_watermarks(self._consumer, topic).items()
        ]
        self._consumer.assign(assigned)
        self._train, self._stream = train, stream
        self.joins = Joins()

    def poll(self, timeout: float = 0.0, rounds: int = 20) -> None:
        """Read what arrived since the last call (up to `rounds` batches)."""
        for _ in range(rounds):
            batch = consume_ready(self._consumer, 1000, timeout)
            for msg in batch:
                if msg.error() is None:
                    self._take(msg)
            if len(batch) < 1000:
                return

    def _take(self, msg: Message) -> None:
        headers = samples.headers_of(msg)
        if msg.topic() != self._train:
            self.joins.take_dead_letter(samples.header(headers, samples.REASON))
            return
        if samples.header(headers, samples.CONTENT_TYPE) != samples.SAMPLE_TYPE:
            return  # ingestion's batches: labelled samples, not joined ones
        with contextlib.suppress(DecodeError):  # the topic is anyone's: skip what is no Sample
            self.joins.take_sample(sample_pb2.Sample.FromString(msg.value() or b""), self._stream)

    def close(self) -> None:
        """Leave (no group offsets were ever committed)."""
        self._consumer.close()


@dataclass
class Snapshot:
    """The latest of everything the dashboard shows."""

    trainer: metrics_pb2.TrainerMetrics = field(default_factory=metrics_pb2.TrainerMetrics)
    trained_per_s: float = 0.0  # between the trainer's last two metrics messages
    latest_version: int = 0
    served: Served | None = None
    history: list[Served] = field(default_factory=list)
    joins: Joins | None = None  # with a JoinFollower (demo --feedback)


class TrainerMetricsFollower:
    """The newest `TrainerMetrics` of one model, read from the metrics topic's end onwards."""

    def __init__(self, kafka: KafkaSettings, topic: str, model: str) -> None:
        self._consumer = Consumer(consumer_config(kafka, "streamlearn-watch"))
        ends = high_watermarks(self._consumer, topic)
        self._consumer.assign([TopicPartition(topic, p, max(0, o - 1)) for p, o in ends.items()])
        self._model = model
        self.latest = metrics_pb2.TrainerMetrics()

    def poll(self, timeout: float = 0.2) -> None:
        """Read what arrived since the last call."""
        for msg in consume_ready(self._consumer, 500, timeout):
            if msg.error() is None:
                metrics = metrics_pb2.TrainerMetrics.FromString(msg.value() or b"")
                if metrics.model == self._model:
                    self.latest = metrics

    def close(self) -> None:
        """Leave (no group offsets were ever committed)."""
        self._consumer.close()


def newest_per_model(
    found: Iterable[metrics_pb2.TrainerMetrics],
) -> dict[str, metrics_pb2.TrainerMetrics]:
    """The newest message of each model (by its time; the later one read wins a tie)."""
    newest: dict[str, metrics_pb2.TrainerMetrics] = {}
    for metrics in found:
        held = newest.get(metrics.model)
        if held is None or metrics.time.ToNanoseconds() >= held.time.ToNanoseconds():
            newest[metrics.model] = metrics
    return newest


def latest_trainer_metrics(
    kafka: KafkaSettings, topic: str, tail: int = 200, timeout: float = 3.0
) -> dict[str, metrics_pb2.TrainerMetrics]:
    """The newest TrainerMetrics of each model among the last `tail` records per partition.

    For `streamlearn status`: bounded by `timeout`; an unreachable broker or a missing topic
    gives what was read so far (possibly nothing), never an error.
    """
    consumer = Consumer(consumer_config(kafka, "streamlearn-status"))
    read: list[metrics_pb2.TrainerMetrics] = []
    try:
        ends = {p: end for p, end in high_watermarks(consumer, topic, timeout).items() if end}
        consumer.assign([TopicPartition(topic, p, max(0, end - tail)) for p, end in ends.items()])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    with contextlib.suppress(DecodeError):
                        read.append(metrics_pb2.TrainerMetrics.FromString(msg.value() or b""))
            # Positions, not the offsets read: a transaction's commit marker ends a partition.
            done = consumer.position([TopicPartition(topic, p) for p in ends])
            ends = {t.partition: ends[t.partition] for t in done if t.offset < ends[t.partition]}
    except (KafkaException, KeyError):  # KeyError: no such topic
        pass
    finally:
        consumer.close()
    return newest_per_model(read)


def rate_between(
    previous: metrics_pb2.TrainerMetrics, latest: metrics_pb2.TrainerMetrics
) -> float | None:
    """Events learned per second between two metrics messages (None: not two distinct ones)."""
    seconds = (latest.time.ToNanoseconds() - previous.time.ToNanoseconds()) / 1e9
    if not previous.time.seconds or seconds <= 0:
        return None
    return (latest.events_applied - previous.events_applied) / seconds


def served_accuracy(
    client: InferenceClient, model: str, x: np.ndarray, y: np.ndarray, rows: int = 64
) -> tuple[int, float] | None:
    """(version, accuracy) of the served model on (x, y); None while nothing is served."""
    scores, versions = [], set()
    try:
        for start in range(0, len(x), rows):  # within the server's max batch size
            part, version = client.predict(model, x[start : start + rows])
            scores.append(part.ravel())
            versions.add(version)
    except StreamlearnError:
        return None
    if len(versions) > 1:  # swapped mid-way: score again next time
        return None
    predicted = (np.concatenate(scores) > 0.5).astype(y.dtype)
    return versions.pop(), float((predicted == y).mean())


def latest_version(registry: RegistryClient, model: str) -> int:
    """The newest registered version number (0: none, or the registry is unreachable)."""
    try:
        return int(registry.get_version(model).version)
    except StreamlearnError:
        return 0


class Watch:
    """Polls the trainer's metrics, the registry and inference on one background thread."""

    def __init__(
        self,
        metrics: TrainerMetricsFollower,
        registry: RegistryClient,
        inference: InferenceClient,
        model: str,
        holdout: Callable[[], tuple[np.ndarray, np.ndarray]],
        every_s: float = 0.5,
        joins: JoinFollower | None = None,
    ) -> None:
        self.snapshot = Snapshot(joins=None if joins is None else joins.joins)
        self._joins = joins
        self._metrics, self._registry, self._inference = metrics, registry, inference
        self._model, self._holdout, self._every_s = model, holdout, every_s
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> Watch:
        """Begin polling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and close the metrics consumer."""
        self._stop.set()
        self._thread.join(10)
        self._metrics.close()
        if self._joins is not None:
            self._joins.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._metrics.poll(self._every_s)
            self._take_metrics(self._metrics.latest)
            if self._joins is not None:
                self._joins.poll()
            self.snapshot.latest_version = latest_version(self._registry, self._model)
            x, y = self._holdout()
            found = served_accuracy(self._inference, self._model, x, y)
            if found is not None:
                served = Served(time.monotonic() - self._started, *found)
                self.snapshot.served = served
                self.snapshot.history.append(served)

    def _take_metrics(self, latest: metrics_pb2.TrainerMetrics) -> None:
        rate = rate_between(self.snapshot.trainer, latest)
        if rate is not None:
            self.snapshot.trained_per_s = rate
        self.snapshot.trainer = latest
