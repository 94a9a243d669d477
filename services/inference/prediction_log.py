"""The prediction log: every answered row, as served, handed to a sink in the background.

With `INFERENCE_LOG_PREDICTIONS` on, each answered request (of a logged model) becomes one
`PredictionRecord` per row: its event id, stream, model, version, the features as the model
saw them (dense and hashed ids, after featurisation) and its outputs. The joiner pairs them
with feedback into training samples.

Logging never slows or fails a request: the request thread only puts a reference to
arrays it already has into a bounded queue; a full queue drops the entry, counted in
`streamlearn_inference_prediction_log_dropped_total`. A writer thread builds the records
and calls the sink (in the service, a Kafka producer; in tests, a list). A failing sink
drops, counts and logs, and the writer carries on. `kafka_sink` writes to Kafka through a
confluent-kafka producer (the service's, or a test's fake with its `produce`/`poll`); a
record the broker does not acknowledge is counted as dropped (cause `delivery_failed`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter

from shared.feedback import PredictionRecord, encode_prediction
from shared.onnx_models import INPUT

if TYPE_CHECKING:  # only for types: the log itself needs no Kafka client
    from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

# The trainer's name for the hashed-id input (as in services.inference.named).
SPARSE = "sparse"
# The response parameter that tells a client the id to send its feedback with.
EVENT_ID = "event_id"

DROPPED = Counter(
    "streamlearn_inference_prediction_log_dropped_total",
    "Prediction-log records dropped (queue full, unloggable or sink failure)",
    ["model", "cause"],
)
WRITTEN = Counter(
    "streamlearn_inference_prediction_log_written_total",
    "Prediction-log records handed to the sink",
    ["model"],
)

Sink = Callable[[Sequence[PredictionRecord]], None]

Report = Callable[["KafkaError | None", "Message"], None]


@dataclass(frozen=True)
class _Answered:
    """What the request thread hands over: references only, no copies or conversions."""

    event_id: str
    stream: str
    model: str
    version: int
    feeds: Mapping[str, np.ndarray]
    results: Mapping[str, np.ndarray]
    timestamp_ms: int


class PredictionLog:
    """A bounded queue in front of a sink, drained by one writer thread."""

    def __init__(
        self,
        sink: Sink,
        models: Collection[str] | None = None,
        streams: Mapping[str, str] | None = None,
        max_queue: int = 10_000,
        max_batch: int = 500,
    ) -> None:
        """A log that is not writing yet (see `start`).

        Args:
            sink: Takes a batch of records; may block (it only delays the writer).
            models: The models whose predictions are logged; None: every model.
            streams: The stream of each model; a model not named here: its own name.
            max_queue: Answered requests waiting for the writer; beyond it they are dropped.
            max_batch: Requests taken off the queue per sink call at most.

        """
        self._sink = sink
        self._models = None if models is None else frozenset(models)
        self._streams = dict(streams or {})
        self._queue: queue.Queue[_Answered] = queue.Queue(maxsize=max_queue)
        self._max_batch = max_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def logs(self, model: str) -> bool:
        """Whether `model`'s predictions are logged."""
        return self._models is None or model in self._models

    def event_id(self, request_id: str) -> str:
        """The request's own id, or a new one when it sent none."""
        return request_id or uuid.uuid4().hex

    def submit(
        self,
        event_id: str,
        model: str,
        version: int,
        feeds: Mapping[str, np.ndarray],
        results: Mapping[str, np.ndarray],
    ) -> bool:
        """Queue an answered request without blocking; False when it was dropped."""
        answered = _Answered(
            event_id,
            self._streams.get(model, model),
            model,
            version,
            feeds,
            results,
            time.time_ns() // 1_000_000,
        )
        try:
            self._queue.put_nowait(answered)
        except queue.Full:
            DROPPED.labels(model, "queue_full").inc(_rows(feeds))
            return False
        return True

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._write_loop, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to `timeout_s`), then stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def drain(self) -> int:
        """Write everything queued now, on the caller's thread; the records written."""
        written = 0
        while batch := self._take(block=False):
            written += self._write(batch)
        return written

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take(block=True)
            if batch:
                self._write(batch)
        self.drain()

    def _take(self, block: bool) -> list[_Answered]:
        batch: list[_Answered] = []
        try:
            batch.append(self._queue.get(timeout=0.1) if block else self._queue.get_nowait())
            while len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _write(self, batch: list[_Answered]) -> int:
        records: list[PredictionRecord] = []
        for answered in batch:
            try:
                records += rows_of(answered)
            except Exception:  # a model whose tensors cannot be logged must not stop the log
                DROPPED.labels(answered.model, "unloggable").inc(_rows(answered.feeds))
                log.exception("prediction not loggable", extra={"model": answered.model})
        if not records:
            return 0
        try:
            self._sink(records)
        except Exception:  # e.g. the producer's local queue is full: dropped, counted, said
            for record in records:
                DROPPED.labels(record.model, "sink_failed").inc()
            log.exception("prediction log sink failed", extra={"records": len(records)})
            return 0
        for record in records:
            WRITTEN.labels(record.model).inc()
        return len(records)


def rows_of(answered: _Answered) -> list[PredictionRecord]:
    """One record per row: the row's dense features, hashed ids and outputs.

    A request of one row keeps its event id; row i of a larger one is `<event id>/<i>`.
    Features are the model's `features` and `sparse` inputs (the featurized named fields,
    or what a positional request sent); a model without them logs empty features.
    """
    rows = _rows(answered.feeds)
    dense = _per_row(answered.feeds.get(INPUT), rows, np.float32)
    ids = _per_row(answered.feeds.get(SPARSE), rows, np.int64)
    outputs = {
        name: _per_row(array, rows, np.float64)
        for name, array in answered.results.items()
        if np.asarray(array).dtype.kind in "biuf"
    }
    return [
        PredictionRecord(
            event_id=answered.event_id if rows == 1 else f"{answered.event_id}/{i}",
            stream=answered.stream,
            model=answered.model,
            version=answered.version,
            dense=tuple(dense[i].tolist()),
            sparse_ids=tuple(ids[i].tolist()),
            outputs=tuple((name, tuple(values[i].tolist())) for name, values in outputs.items()),
            timestamp_ms=answered.timestamp_ms,
        )
        for i in range(rows)
    ]


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    """Rows of a request: the first dimension of its inputs (1 for scalars or none)."""
    first = next(iter(feeds.values()), None)
    shape = np.shape(first) if first is not None else ()
    return int(shape[0]) if shape else 1


def _per_row(array: np.ndarray | None, rows: int, dtype: type[np.generic]) -> np.ndarray:
    """`array` as `rows` flat rows of `dtype` (rows of nothing when it is None)."""
    if array is None:
        return np.empty((rows, 0), dtype=dtype)
    values = np.asarray(array, dtype=dtype)
    return values.reshape(rows, -1) if values.size else np.empty((rows, 0), dtype=dtype)


def kafka_sink(producer: Producer, topic: str) -> Sink:
    """Write records keyed by event id (feedback is keyed alike, so they co-partition).

    Never blocks: a full local queue drops the record (`producer_full`), and a record the
    broker refuses or that expires undelivered is dropped when its report arrives
    (`delivery_failed`, on a later `poll`: the writer polls after every batch, the service
    flushes on shutdown). One warning per run of failed deliveries, not one per record.
    """
    reports: dict[str, Report] = {}  # one callback per model, reused
    failing = False  # from a failed delivery until the next acknowledged one

    def report_for(model: str) -> Report:
        def report(err: KafkaError | None, _msg: Message) -> None:
            nonlocal failing
            if err is None:
                failing = False
                return
            DROPPED.labels(model, "delivery_failed").inc()
            if not failing:
                failing = True
                log.warning(
                    "prediction log records not delivered",
                    extra={"topic": topic, "model": model, "error": err.str()},
                )

        return report

    def write(records: Sequence[PredictionRecord]) -> None:
        for record in records:
            report = reports.get(record.model)
            if report is None:
                report = reports[record.model] = report_for(record.model)
            try:
                producer.produce(
                    topic,
                    encode_prediction(record),
                    record.event_id.encode(),
                    on_delivery=report,
                )
            except BufferError:  # the producer's local queue is full: this one is dropped
                DROPPED.labels(record.model, "producer_full").inc()
        producer.poll(0)

    return write
