"""The prediction log and feedback contracts as domain objects, and their codecs.

A `PredictionRecord` is one answered row of an inference request: what the model saw
(dense features and hashed ids, after featurisation) and what it said. A `Feedback` is
what happened afterwards (a click, a conversion, a rating), keyed by the same event id.
The joiner (`services.joiner`) pairs them into training samples.

Every byte on these topics comes from outside: `decode_feedback` and `decode_prediction`
turn any input into a record or a `FeedbackProblem` naming what is wrong (its `reason` is a
stable code for dead letters), never another exception. Constructing a record checks it
the same way, so a record in hand is always valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import InvalidArgument
from streamlearn.v1 import feedback_pb2, sample_pb2

SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = (0, 1)  # 0: producers that leave it unset mean the first version
MAX_ID_CHARS = 256
MAX_NAME_CHARS = 256
# Timestamps from 1970 (exclusive: 0 means "not set") to the year 9999, as protobuf allows.
MAX_TIME_MS = 253_402_300_799_999

LabelKind = Literal["regression", "class_index", "multi_label"]
LabelValue = float | int | tuple[int, ...]
_M = TypeVar("_M", feedback_pb2.Feedback, feedback_pb2.PredictionRecord)


class FeedbackProblem(InvalidArgument):
    """A prediction or feedback record that is malformed; `reason` says how.

    Reasons: `undecodable`, `unsupported_schema`, `missing_event_id`, `missing_stream`,
    `missing_model`, `missing_version`, `oversized_name`, `missing_time`, `invalid_time`,
    `missing_label`, `non_finite`, `label_out_of_range`, `invalid_weight`,
    `invalid_sparse_id`.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Label:
    """A label of one of the Sample's kinds: a number, a class, or a set of classes."""

    kind: LabelKind
    value: LabelValue

    def __post_init__(self) -> None:
        if self.kind == "regression":
            if isinstance(self.value, tuple) or not math.isfinite(self.value):
                raise FeedbackProblem("non_finite", f"regression label {self.value} is not finite")
        elif self.kind == "class_index":
            if not isinstance(self.value, int) or not 0 <= self.value < 2**31:
                raise FeedbackProblem(
                    "label_out_of_range", f"class index {self.value!r} is not in [0, 2**31)"
                )
        elif self.kind == "multi_label":
            classes = self.value
            if not isinstance(classes, tuple) or any(not 0 <= c < 2**31 for c in classes):
                raise FeedbackProblem(
                    "label_out_of_range", f"multi-label classes {classes!r} are not in [0, 2**31)"
                )
            if len(set(classes)) != len(classes):
                raise FeedbackProblem("label_out_of_range", "multi-label classes repeat")
        else:
            raise FeedbackProblem("missing_label", f"unknown label kind {self.kind!r}")

    @classmethod
    def regression(cls, value: float) -> Label:
        """A regression target."""
        return cls("regression", float(value))

    @classmethod
    def class_index(cls, value: int) -> Label:
        """A class (binary: 0 or 1)."""
        return cls("class_index", int(value))

    @classmethod
    def multi_label(cls, classes: tuple[int, ...] | list[int]) -> Label:
        """The positive classes of a multi-label target."""
        return cls("multi_label", tuple(int(c) for c in classes))

    def apply(self, message: sample_pb2.Sample | feedback_pb2.Feedback) -> None:
        """Set this label on a `Sample` or a `Feedback` message."""
        if isinstance(self.value, tuple):
            message.multi_label.classes[:] = self.value
        else:
            setattr(message, self.kind, self.value)

    def to_plain(self) -> list[object]:
        """[kind, value] with plain types (for state dicts)."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.kind, value]

    @classmethod
    def from_plain(cls, plain: list[object]) -> Label:
        """The inverse of `to_plain`; FeedbackProblem when it is not one."""
        if not isinstance(plain, list) or len(plain) != 2:
            raise FeedbackProblem("missing_label", f"not a [kind, value] label: {plain!r}")
        kind, value = plain
        if kind == "regression" and isinstance(value, (int, float)):
            return cls.regression(value)
        if kind == "class_index" and isinstance(value, int):
            return cls.class_index(value)
        if kind == "multi_label" and isinstance(value, list):
            return cls.multi_label(value)
        raise FeedbackProblem("missing_label", f"not a [kind, value] label: {plain!r}")


@dataclass(frozen=True)
class Feedback:
    """The outcome of a served prediction (see `feedback.proto`)."""

    event_id: str
    stream: str
    label: Label
    event_time_ms: int
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_id(self.event_id)
        _check_name("stream", self.stream)
        _check_time("event_time", self.event_time_ms)
        if not math.isfinite(self.weight) or self.weight <= 0:
            raise FeedbackProblem("invalid_weight", f"weight {self.weight} is not positive")


@dataclass(frozen=True)
class PredictionRecord:
    """One answered row of an inference request (see `feedback.proto`)."""

    event_id: str
    stream: str
    model: str
    version: int
    dense: tuple[float, ...]
    sparse_ids: tuple[int, ...]
    outputs: tuple[tuple[str, tuple[float, ...]], ...]
    timestamp_ms: int

    def __post_init__(self) -> None:
        _check_id(self.event_id)
        _check_name("stream", self.stream)
        if not self.model:
            raise FeedbackProblem("missing_model", "model is empty")
        _check_name("model", self.model)
        if not 0 < self.version < 2**64:
            raise FeedbackProblem("missing_version", f"version {self.version} is not set")
        if any(not 0 <= i < 2**63 for i in self.sparse_ids):
            raise FeedbackProblem("invalid_sparse_id", "a sparse id is negative")
        _check_time("timestamp", self.timestamp_ms)


def encode_feedback(feedback: Feedback) -> bytes:
    """The `Feedback` message of `feedback`."""
    message = feedback_pb2.Feedback(
        schema_version=SCHEMA_VERSION,
        event_id=feedback.event_id,
        stream=feedback.stream,
        weight=0.0 if feedback.weight == 1.0 else feedback.weight,
    )
    feedback.label.apply(message)
    _set_time(message.event_time, feedback.event_time_ms)
    return message.SerializeToString()


def decode_feedback(data: bytes) -> Feedback:
    """A checked `Feedback` from any bytes.

    Raises:
        FeedbackProblem: The bytes are no valid feedback (its `reason` says why).

    """
    message = _parse(feedback_pb2.Feedback, data, "feedback")
    _check_schema(message.schema_version)
    kind = message.WhichOneof("label")
    if kind is None:
        raise FeedbackProblem("missing_label", "feedback carries no label")
    label = (
        Label.multi_label(list(message.multi_label.classes))
        if kind == "multi_label"
        else Label(kind, getattr(message, kind))
    )
    return Feedback(
        event_id=message.event_id,
        stream=message.stream,
        label=label,
        event_time_ms=_time_ms("event_time", message.event_time),
        weight=float(message.weight) if message.weight else 1.0,
    )


def encode_prediction(record: PredictionRecord) -> bytes:
    """The `PredictionRecord` message of `record` (dense values travel as float32)."""
    message = feedback_pb2.PredictionRecord(
        schema_version=SCHEMA_VERSION,
        event_id=record.event_id,
        stream=record.stream,
        model=record.model,
        version=record.version,
        dense=record.dense,
        sparse_ids=record.sparse_ids,
        outputs=[
            feedback_pb2.PredictionOutput(name=name, values=values)
            for name, values in record.outputs
        ],
    )
    _set_time(message.timestamp, record.timestamp_ms)
    return message.SerializeToString()


def decode_prediction(data: bytes) -> PredictionRecord:
    """A checked `PredictionRecord` from any bytes.

    Raises:
        FeedbackProblem: The bytes are no valid prediction record (its `reason` says why).

    """
    message = _parse(feedback_pb2.PredictionRecord, data, "prediction record")
    _check_schema(message.schema_version)
    return PredictionRecord(
        event_id=message.event_id,
        stream=message.stream,
        model=message.model,
        version=message.version,
        dense=tuple(message.dense),
        sparse_ids=tuple(message.sparse_ids),
        outputs=tuple((o.name, tuple(o.values)) for o in message.outputs),
        timestamp_ms=_time_ms("timestamp", message.timestamp),
    )


def _parse(kind: type[_M], data: bytes, what: str) -> _M:
    try:
        return kind.FromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        # upb's messages carry no input bytes; a short cause helps whoever reads the DLQ.
        raise FeedbackProblem("undecodable", f"not a {what}: {str(exc)[:200]}") from None


def _check_schema(version: int) -> None:
    if version not in SUPPORTED_SCHEMAS:
        raise FeedbackProblem("unsupported_schema", f"schema version {version} is not supported")


def _check_id(event_id: str) -> None:
    if not event_id:
        raise FeedbackProblem("missing_event_id", "event_id is empty")
    if len(event_id) > MAX_ID_CHARS:
        raise FeedbackProblem(
            "oversized_name", f"event_id of {len(event_id)} chars exceeds {MAX_ID_CHARS}"
        )


def _check_name(what: str, name: str) -> None:
    if not name:
        raise FeedbackProblem(f"missing_{what}", f"{what} is empty")
    if len(name) > MAX_NAME_CHARS:
        raise FeedbackProblem(
            "oversized_name", f"{what} of {len(name)} chars exceeds {MAX_NAME_CHARS}"
        )


def _check_time(what: str, ms: int) -> None:
    if ms == 0:
        raise FeedbackProblem("missing_time", f"{what} is not set")
    if not 0 < ms <= MAX_TIME_MS:
        raise FeedbackProblem("invalid_time", f"{what} {ms} ms is outside 1970-9999")


def _time_ms(what: str, stamp: Timestamp) -> int:
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise FeedbackProblem("invalid_time", f"{what} has nanos {stamp.nanos} outside [0, 1e9)")
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000


def _set_time(stamp: Timestamp, ms: int) -> None:
    seconds, rest = divmod(ms, 1000)
    stamp.seconds, stamp.nanos = seconds, rest * 1_000_000
