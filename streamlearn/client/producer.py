"""`SampleProducer`: the Python front door for training samples and feedback.

Samples go to the raw topic, the outcomes of served predictions (feedback) to the feedback
topic.

Idempotent and `acks=all` (a retry never duplicates or reorders), keyed by the sample key
(per-key order is kept up to the trainer), batched by librdkafka. Every record's delivery
is reported: failures are counted, passed to an optional callback, and raised by `flush`.

librdkafka's logs go to the `streamlearn.kafka` logger; losing the broker is reported once
per outage (and its end with how long it lasted), not once per reconnect attempt.
`connected` and `pending` tell a caller whether records are flowing (no librdkafka statistics:
an idle producer that is never polled would queue one event per interval, without bound).

Example:
    with SampleProducer(stream="clicks") as producer:
        producer.send({"key": "user-1", "features": [0.1, 0.2], "label": 1})
        producer.send({"key": "u7", "features": {"age": 31, "country": "FR"}, "label": 1})
        producer.send_columns(features, labels, keys=keys)   # the high-rate path
        producer.feedback("3f2a", "clicks", label=1)  # what happened after prediction 3f2a

"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from shared import samples
from shared.errors import InvalidArgument, Unavailable
from shared.features import put_values
from shared.feedback import Feedback, Label, encode_feedback
from shared.kafka.config import dotted, producer_config
from shared.kafka.outage import ConnectionLog
from shared.kafka.producer import ServeThrottle, produce
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.v1 import sample_pb2

DeliveryCallback = Callable[[str | None, int], None]  # (error or None, samples in the record)
_BATCH_HEADERS = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]


class SampleProducer:
    """Publishes samples (dicts, protobufs or numpy columns) to streamlearn's raw topic."""

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        stream: str = "",
        topic: str = TopicSettings().raw,
        feedback_topic: str = TopicSettings().feedback,
        kafka: KafkaSettings | None = None,
        on_delivery: DeliveryCallback | None = None,
        **librdkafka: Any,
    ) -> None:
        """Connect a producer.

        Args:
            bootstrap_servers: Kafka brokers (ignored when `kafka` is given).
            stream: Default stream of samples that name none.
            topic: The raw topic ingestion reads.
            feedback_topic: The topic `feedback` writes to (the joiner reads it).
            kafka: Full connection settings (SASL and so on).
            on_delivery: Called once per record with an error text (or None) and its sample
                count (0 for a feedback record).
            **librdkafka: Extra producer properties, dots written as underscores.

        """
        settings = kafka or KafkaSettings(bootstrap_servers=bootstrap_servers)
        # Deliveries end an outage: no silent end after a quiet gap, which a caller that
        # does not poll for a while (its failures then served late, in a burst) would see.
        self._connection = ConnectionLog(quiet_gap_s=None)
        # The caller's properties win, e.g. their own `error_cb` or `logger`.
        config = producer_config(settings) | self._connection.client_config() | dotted(librdkafka)
        self._producer = Producer(config)
        self._stream = stream
        self._topic = topic
        self._feedback_topic = feedback_topic
        self._callback = on_delivery
        self.delivered = 0  # samples acknowledged by the broker
        self.feedback_delivered = 0  # feedback records acknowledged by the broker
        self.failed: list[str] = []
        # Made once, not a closure per record: single samples and feedback are the hot path.
        self._reports = {rows: self._report(rows) for rows in (0, 1)}
        self._serve = ServeThrottle()

    def send(self, sample: sample_pb2.Sample | Mapping[str, Any]) -> None:
        """Queue one sample, a `Sample` or a dict (see `to_sample`).

        `features` as a dict sends named features (streams with a feature schema), as a
        list or array positional dense ones::

            producer.send({"key": "u7", "features": {"age": 31, "country": "FR"}, "label": 1})
            producer.send({"key": "u7", "features": [0.3, 1.2], "label": 1})
            producer.send({"key": "doc-1", "text": "The quick brown fox"})  # a text stream

        Raises:
            InvalidArgument: a dict `to_sample` refuses.

        """
        message = (
            sample if isinstance(sample, sample_pb2.Sample) else to_sample(sample, self._stream)
        )
        if not message.stream:
            message.stream = self._stream
        self._produce(message.key.encode(), message.SerializeToString(), samples.SAMPLE_HEADERS, 1)

    def feedback(
        self,
        event_id: str,
        stream: str = "",
        *,
        label: FeedbackLabel,
        event_time: float | datetime | None = None,
        weight: float | None = None,
    ) -> None:
        """Queue the outcome of a served prediction, keyed by its event id.

        The event id is the one inference answered with (its `event_id` response parameter;
        row i of a request of several rows: `<id>/<i>`). The joiner pairs the two into a
        training sample. Checked before anything is queued::

            producer.feedback("3f2a", "clicks", label=1)            # a class (binary: 0/1)
            producer.feedback("3f2a", "prices", label=12.5)         # a regression target
            producer.feedback("3f2a", "tags", label=[0, 3])         # multi-label classes
            producer.feedback("3f2a", label=0, event_time=t, weight=2.0)

        Args:
            event_id: The served prediction's event id.
            stream: Its stream; empty: the producer's default stream.
            label: An int (class index), a float (regression target), a list or tuple of
                ints (the positive classes of a multi-label target), or a `Label`.
            event_time: When the outcome happened: unix seconds or an aware datetime;
                None: now.
            weight: The sample's weight (positive); None: 1.

        Raises:
            InvalidArgument: an argument is not valid feedback (a `FeedbackProblem` whose
                `reason` says which check failed); nothing was queued.

        """
        record = Feedback(
            event_id=_text("event_id", event_id),
            stream=_text("stream", stream) or self._stream,
            label=feedback_label(label),
            event_time_ms=_time_ms(event_time),
            weight=1.0 if weight is None else _number("weight", weight),
        )
        self._produce(
            record.event_id.encode(), encode_feedback(record), [], 0, self._feedback_topic
        )

    def send_columns(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        keys: Sequence[str] | None = None,
        event_ids: Sequence[str] | None = None,
        weights: np.ndarray | None = None,
        event_times_ms: np.ndarray | None = None,
        stream: str = "",
        rows_per_record: int = 1000,
    ) -> int:
        """Queue many samples packed as columns, `rows_per_record` per Kafka record.

        Integer labels are class indices, floating ones regression targets. Each record is
        keyed by its first row's key, so group rows by key for per-key order. Returns the
        number of records queued.
        """
        n = len(features)
        columns = samples.Columns(
            stream or self._stream,
            list(event_ids) if event_ids is not None else [uuid.uuid4().hex for _ in range(n)],
            list(keys) if keys is not None else [""] * n,
            _times(event_times_ms, n),
            np.asarray(features, dtype=np.float32).reshape(n, -1),
            np.asarray(labels),
            np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32),
        )
        records = 0
        for start in range(0, n, rows_per_record):
            part = columns.take(np.arange(start, min(start + rows_per_record, n)))
            self._produce(
                part.keys[0].encode(), samples.encode_batch(part), _BATCH_HEADERS, len(part)
            )
            records += 1
        return records

    @property
    def connected(self) -> bool:
        """A broker answered at the last sign (a delivery), no connection failed since.

        False before the first delivery and from the first failed connection of an outage.
        Derived from delivery reports, errors and log lines: no statistics are requested,
        so an idle producer queues nothing between polls.
        """
        self._producer.poll(0)  # serves pending logs, errors and delivery reports
        return self._connection.connected

    @property
    def pending(self) -> int:
        """Records queued or in flight: produced, their delivery not reported yet."""
        return len(self._producer)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued record's report; returns the samples delivered so far.

        Raises:
            Unavailable: records are still queued after `timeout`, or some were not delivered.

        """
        remaining = self._producer.flush(timeout)
        if remaining:
            raise Unavailable(f"{remaining} record(s) still queued after {timeout:.0f}s")
        if self.failed:
            raise Unavailable(f"{len(self.failed)} record(s) not delivered: {self.failed[0]}")
        return self.delivered

    def close(self) -> None:
        """Flush (raising on failures)."""
        self.flush()

    def __enter__(self) -> SampleProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _produce(
        self,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        rows: int,
        topic: str | None = None,
    ) -> None:
        """Queue one record on `topic` (the raw topic when None); rows 0: a feedback record."""
        report = self._reports.get(rows)
        if report is None:  # a batch's row count: its own report
            report = self._report(rows)
        produce(
            self._producer,
            topic or self._topic,
            value,
            key or None,
            serve=self._serve.due(),
            headers=headers,
            on_delivery=report,
        )

    def _report(self, rows: int) -> Callable[[KafkaError | None, Message], None]:
        """The delivery report of a record of `rows` samples (0: a feedback record)."""

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.delivered += rows
                self.feedback_delivered += 0 if rows else 1
                self._connection.recovered()
            else:
                self.failed.append(err.str())
            if self._callback is not None:
                self._callback(None if err is None else err.str(), rows)

        return report


FeedbackLabel = Label | bool | int | float | np.integer | np.floating | Sequence[int]


def feedback_label(label: FeedbackLabel) -> Label:
    """The `Label` of a feedback `label` argument (see `SampleProducer.feedback`).

    Raises:
        InvalidArgument: a label of another type, a class index out of range, a non-finite
            target, repeated classes.

    """
    if isinstance(label, Label):
        return label
    if isinstance(label, bool | int | np.integer):
        return Label.class_index(int(label))
    if isinstance(label, float | np.floating):
        return Label.regression(float(label))
    if isinstance(label, list | tuple | np.ndarray):
        classes = list(label)
        if not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in classes):
            raise InvalidArgument(f"multi-label classes must be ints, not {classes!r}"[:200])
        return Label.multi_label([int(c) for c in classes])
    raise InvalidArgument(
        "label must be an int (class), a float (target) or a list of ints (multi-label), "
        f"not {type(label).__name__}"
    )


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be text, not {type(value).__name__}")
    return value


def _number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgument(f"{what} must be a number, not {type(value).__name__}")
    return float(value)


def _time_ms(event_time: float | datetime | None) -> int:
    """Unix milliseconds of `event_time` (unix seconds or an aware datetime; None: now)."""
    if event_time is None:
        return time.time_ns() // 1_000_000
    if isinstance(event_time, datetime):
        if event_time.tzinfo is None:
            raise InvalidArgument("event_time: a datetime needs a time zone (e.g. UTC)")
        seconds = event_time.timestamp()
    else:
        seconds = _number("event_time", event_time)
    if not math.isfinite(seconds):
        raise InvalidArgument(f"event_time {seconds} is not finite")
    # Out of range for protobuf (1970-9999) is refused by Feedback with reason invalid_time.
    return round(seconds * 1000) if abs(seconds) < 1e15 else -1


def to_sample(fields: Mapping[str, Any], stream: str = "") -> sample_pb2.Sample:
    """A `Sample` from a dict.

    Keys: `features`, `dense`, `label` (int: class index, float: regression target), `labels`
    (multi-label class list), `key`, `event_id` (default: a new UUID), `stream`, `weight`,
    `event_time` (unix seconds; default: now), `sparse` ({indices, values}), `text`,
    `attributes`.

    `features` is either a dict of named values, for a stream with a feature schema
    (`{"age": 31, "country": "FR"}`: numbers for numeric features, text or numbers for
    categorical ones; a name left out or set to None is missing), or a list or 1-D array of
    numbers, the positional dense vector (as `dense`). Ingestion checks named values
    against the stream's schema; here only their types are checked.

    `text` is a str, the input of a text stream (`{"key": "doc-1", "text": "..."}`: no
    features, no label unless the stream has a label kind); ingestion checks its length
    against the stream's limit. On other streams it travels with the sample.

    Raises:
        InvalidArgument: an unknown key, named features beside `dense`, features that are
            neither a dict nor a list of numbers, a feature value that is neither a number
            nor text, a label of another type, or text that is not a str UTF-8 can encode.

    """
    unknown = set(fields) - _DICT_KEYS
    if unknown:
        raise InvalidArgument(
            f"unknown sample fields {sorted(unknown)}; known: {sorted(_DICT_KEYS)}"
        )
    sample = sample_pb2.Sample(
        schema_version=1,
        event_id=str(fields.get("event_id") or uuid.uuid4().hex),
        key=str(fields.get("key", "")),
        stream=str(fields.get("stream") or stream),
        weight=float(fields.get("weight", 0.0)),
        text=_sample_text(fields.get("text")),
        attributes={str(k): str(v) for k, v in dict(fields.get("attributes", {})).items()},
    )
    sample.event_time.FromMilliseconds(int(float(fields.get("event_time", time.time())) * 1000))
    _set_features(sample, fields)
    if "sparse" in fields:
        sample.sparse.indices.extend(int(i) for i in fields["sparse"]["indices"])
        sample.sparse.values.extend(float(v) for v in fields["sparse"]["values"])
    _set_label(sample, fields)
    return sample


_DICT_KEYS = {
    "features", "dense", "label", "labels", "key", "event_id", "stream", "weight",
    "event_time", "sparse", "text", "attributes",
}  # fmt: skip


def _sample_text(text: object) -> str:
    """A sample's `text` (None: none); a clear error instead of protobuf's for bad text."""
    if text is None:
        return ""
    if not isinstance(text, str):  # str() of bytes would send "b'...'" as the text
        raise InvalidArgument(f"text must be a str, not {type(text).__name__}")
    try:
        text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
        raise InvalidArgument(f"text is not encodable as UTF-8: {exc.reason}") from exc
    return text


def _set_features(sample: sample_pb2.Sample, fields: Mapping[str, Any]) -> None:
    """`features` (named when a dict, else positional) and `dense` into the sample."""
    features = fields.get("features")
    if isinstance(features, Mapping):
        if "dense" in fields:
            raise InvalidArgument(
                "a sample has named features (a dict under 'features') or 'dense', not both"
            )
        put_values(sample, features)
        return
    sample.dense.extend(_dense(fields.get("features", fields.get("dense", ()))))


def _dense(values: Any) -> list[float]:
    """A positional feature vector as floats; a clear error for anything else."""
    hint = "features must be a dict of name -> value (named) or a list of numbers (positional)"
    if isinstance(values, str | bytes):
        raise InvalidArgument(f"{hint}, not text {str(values)[:40]!r}")
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{hint}: {exc}") from exc
    if array.ndim != 1:
        raise InvalidArgument(f"{hint}: got an array of shape {array.shape}")
    dense: list[float] = array.tolist()
    return dense


def _set_label(sample: sample_pb2.Sample, fields: Mapping[str, Any]) -> None:
    label = fields.get("label")
    if isinstance(label, bool | int | np.integer):
        sample.class_index = int(label)
    elif isinstance(label, float | np.floating):
        sample.regression = float(label)
    elif label is not None:
        raise InvalidArgument(f"label must be an int (class) or a float (target), not {label!r}")
    if "labels" in fields:
        sample.multi_label.SetInParent()  # set even with no positive class
        sample.multi_label.classes.extend(int(c) for c in fields["labels"])


def _times(event_times_ms: np.ndarray | None, n: int) -> np.ndarray:
    if event_times_ms is None:
        return np.full(n, int(time.time() * 1000), dtype=np.int64)
    return np.asarray(event_times_ms, dtype=np.int64)
