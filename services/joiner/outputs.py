"""What the joiner emits: training samples (joined, negative) and dead letters with a reason.

Every output is a frozen, hashable value, so runs can be compared as multisets. Samples
carry their lineage in `attributes` (the model and version that served the prediction, the
outcome and the label delay) and the served output in `served_score`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.feedback import Feedback, Label, PredictionRecord
from shared.serving import OUTPUT
from streamlearn.v1 import sample_pb2

# Dead-letter reasons (stable codes, like ingestion's `Reason`).
LATE = "late"  # feedback after its prediction's window closed
UNKNOWN = "unknown"  # feedback for no prediction seen within its wait or the retention
EXPIRED = "expired"  # a prediction closed without feedback on a stream without negatives
OVERFLOW = "overflow"  # evicted to keep memory bounded (max_pending)
DUPLICATE_PREDICTION = "duplicate_prediction"
DUPLICATE_FEEDBACK = "duplicate_feedback"

# Sample attributes: where a joined sample came from.
MODEL = "streamlearn-model"
VERSION = "streamlearn-version"
OUTCOME = "streamlearn-outcome"
LABEL_DELAY_MS = "streamlearn-label-delay-ms"


def _sample(
    record: PredictionRecord, label: Label, time_ms: int, weight: float, outcome: str, delay: int
) -> sample_pb2.Sample:
    """A training sample of the features as served; hashed ids travel as sparse indices."""
    sample = sample_pb2.Sample(
        schema_version=1,
        event_id=record.event_id,
        key=record.event_id,
        stream=record.stream,
        dense=record.dense,
        weight=0.0 if weight == 1.0 else weight,
        attributes={
            MODEL: record.model,
            VERSION: str(record.version),
            OUTCOME: outcome,
            LABEL_DELAY_MS: str(delay),
        },
    )
    served = dict(record.outputs).get(OUTPUT)
    if served is not None:  # the trainer scores what production answered (`served.py`)
        sample.served_score[:] = served
    if record.sparse_ids:
        sample.sparse.indices[:] = record.sparse_ids
        sample.sparse.values[:] = [1.0] * len(record.sparse_ids)
    seconds, rest = divmod(time_ms, 1000)
    sample.event_time.seconds, sample.event_time.nanos = seconds, rest * 1_000_000
    label.apply(sample)
    if label.kind == "multi_label":  # no classes (a negative) still says which label it is
        sample.multi_label.SetInParent()
    return sample


@dataclass(frozen=True)
class Joined:
    """A prediction and its feedback; `delay_ms`: label event time - prediction time, >= 0."""

    prediction: PredictionRecord
    feedback: Feedback
    delay_ms: int

    def sample(self) -> sample_pb2.Sample:
        """The training sample, at the label's event time, with the feedback's weight."""
        return _sample(
            self.prediction,
            self.feedback.label,
            self.feedback.event_time_ms,
            self.feedback.weight,
            "joined",
            self.delay_ms,
        )


@dataclass(frozen=True)
class Negative:
    """A prediction whose window closed in silence on a stream that counts that as a label."""

    prediction: PredictionRecord
    label: Label
    closed_ms: int

    @property
    def delay_ms(self) -> int:
        """How long the negative took to decide."""
        return self.closed_ms - self.prediction.timestamp_ms

    def sample(self) -> sample_pb2.Sample:
        """The training sample, at the time its window closed."""
        return _sample(self.prediction, self.label, self.closed_ms, 1.0, "negative", self.delay_ms)


@dataclass(frozen=True)
class Expired:
    """A prediction closed without a label (`reason`: expired, or overflow when evicted)."""

    prediction: PredictionRecord
    reason: str = EXPIRED


@dataclass(frozen=True)
class Late:
    """Feedback after its prediction's window closed (at `closed_ms`)."""

    feedback: Feedback
    closed_ms: int
    reason: str = LATE


@dataclass(frozen=True)
class Unknown:
    """Feedback whose prediction was not seen (`reason`: unknown, or overflow)."""

    feedback: Feedback
    reason: str = UNKNOWN


@dataclass(frozen=True)
class Duplicate:
    """A second prediction or feedback for an id (`reason` says which); the first counts."""

    record: PredictionRecord | Feedback

    @property
    def reason(self) -> str:
        """`duplicate_prediction` or `duplicate_feedback`."""
        if isinstance(self.record, PredictionRecord):
            return DUPLICATE_PREDICTION
        return DUPLICATE_FEEDBACK


Output = Joined | Negative | Expired | Late | Unknown | Duplicate
DeadLetter = Expired | Late | Unknown | Duplicate
