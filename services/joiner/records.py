"""The joiner's outputs as Kafka records: samples as ingestion writes them, dead letters.

Transport-free. A training record is what the trainer reads from ingestion: one `Sample`,
keyed by its key (the event id), with the `content-type`, `streamlearn-source` (when an
input record caused it) and `streamlearn-event-id` headers. A dead letter is the record's
bytes (a `PredictionRecord`, a `Feedback`, a `Sample` a definition refused, or the input as
it came when it could not be decoded) with `streamlearn-reason` and `streamlearn-detail`,
like ingestion's dead letters, so the same tools read both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from services.joiner.definitions import check_label
from services.joiner.outputs import Duplicate, Expired, Joined, Late, Negative, Output, Unknown
from shared import samples
from shared.dead_letters import fit, record_size
from shared.feedback import FeedbackProblem, PredictionRecord, encode_feedback, encode_prediction
from streamlearn.v1 import stream_pb2

PREDICTION_TYPE = b"application/x-protobuf;type=streamlearn.v1.PredictionRecord"
FEEDBACK_TYPE = b"application/x-protobuf;type=streamlearn.v1.Feedback"
EMPTY = "empty"  # an input without a value (a tombstone) or with empty bytes
OVERSIZED = "oversized"  # a sample larger than the joiner may write
_DETAIL_MAX = 1024
_OURS = "streamlearn-"
Lookup = Callable[[str], stream_pb2.StreamDefinition | None]


@dataclass(frozen=True)
class Source:
    """Where an input record came from."""

    topic: str
    partition: int
    offset: int

    def header(self) -> tuple[str, bytes]:
        """The `streamlearn-source` header (`topic:partition:offset`)."""
        return samples.SOURCE, f"{self.topic}:{self.partition}:{self.offset}".encode()


@dataclass(frozen=True)
class Record:
    """A record to produce; `reason` is None for a training sample."""

    topic: str
    key: bytes | None
    value: bytes
    headers: samples.Headers
    reason: str | None
    stream: str = ""


@dataclass(frozen=True)
class Topics:
    """Where outputs go."""

    train: str
    dlq: str


def records_of(
    outputs: list[Output], topics: Topics, lookup: Lookup, source: Source | None
) -> list[Record]:
    """The records of the core's outputs; `source`: the input that caused them, if any."""
    return [_record(output, topics, lookup, source) for output in outputs]


def within(record: Record, topics: Topics, limit: int) -> Record:
    """`record` as it can be written in `limit` bytes, so no output stops a partition.

    A dead letter is cut to fit (`shared.dead_letters.fit`); a training sample that does not
    fit becomes the dead letter `oversized` (cut to fit in turn).
    """
    size = record_size(record.key, record.value, record.headers)
    if size <= limit:
        return record
    if record.reason is None:
        detail = f"the joined sample takes {size} bytes, over the limit of {limit}"
        headers = [
            *record.headers,
            (samples.REASON, OVERSIZED.encode()),
            (samples.DETAIL, _bounded(detail)),
        ]
        record = Record(topics.dlq, record.key, record.value, headers, OVERSIZED, record.stream)
    key, value, headers = fit(record.key, record.value, record.headers, limit)
    return replace(record, key=key, value=value, headers=headers)


def undecodable(
    value: bytes | None,
    key: bytes | None,
    headers: samples.Headers,
    problem: FeedbackProblem | None,
    topics: Topics,
    source: Source,
) -> Record:
    """The dead letter of an input that is no record: its bytes untouched, and why."""
    reason = EMPTY if problem is None else problem.reason
    detail = "no value (a tombstone) or empty bytes" if problem is None else str(problem)
    kept = [(k, v) for k, v in headers if not k.startswith(_OURS)]
    dead = [
        *kept,
        source.header(),
        (samples.REASON, reason.encode()),
        (samples.DETAIL, _bounded(detail)),
    ]
    return Record(topics.dlq, key, value or b"", dead, reason)


def _record(output: Output, topics: Topics, lookup: Lookup, source: Source | None) -> Record:
    if isinstance(output, (Joined, Negative)):
        sample = output.sample()
        value = sample.SerializeToString()
        refused = check_label(sample, lookup(sample.stream))
        if refused is not None:
            reason, detail = refused
            return _dead(topics, sample.key, value, samples.SAMPLE_TYPE, reason, detail, source)
        headers = [(samples.CONTENT_TYPE, samples.SAMPLE_TYPE)]
        if source is not None:
            headers.append(source.header())
        headers.append((samples.EVENT_ID, sample.event_id.encode()))
        return Record(topics.train, sample.key.encode(), value, headers, None, sample.stream)
    if isinstance(output, Expired):
        record = output.prediction
        detail = f"prediction at {record.timestamp_ms} ms closed without feedback"
        value = encode_prediction(record)
        return _dead(topics, record.event_id, value, PREDICTION_TYPE, output.reason, detail, source)
    if isinstance(output, (Late, Unknown)):
        feedback = output.feedback
        if isinstance(output, Late):
            detail = f"feedback at {feedback.event_time_ms} ms after its window closed at "
            detail += f"{output.closed_ms} ms"
        else:
            detail = f"no prediction of stream {feedback.stream!r} for this event id"
        value = encode_feedback(feedback)
        return _dead(topics, feedback.event_id, value, FEEDBACK_TYPE, output.reason, detail, source)
    return _duplicate(output, topics, source)


def _duplicate(output: Duplicate, topics: Topics, source: Source | None) -> Record:
    record = output.record
    if isinstance(record, PredictionRecord):
        value, kind = encode_prediction(record), PREDICTION_TYPE
    else:
        value, kind = encode_feedback(record), FEEDBACK_TYPE
    detail = "a second record for this event id: the first counts"
    return _dead(topics, record.event_id, value, kind, output.reason, detail, source)


def _dead(
    topics: Topics,
    event_id: str,
    value: bytes,
    content_type: bytes,
    reason: str,
    detail: str,
    source: Source | None,
) -> Record:
    headers = [(samples.CONTENT_TYPE, content_type)]
    if source is not None:
        headers.append(source.header())
    headers += [
        (samples.REASON, reason.encode()),
        (samples.DETAIL, _bounded(detail)),
        (samples.EVENT_ID, event_id.encode()),
    ]
    return Record(topics.dlq, event_id.encode(), value, headers, reason)


def _bounded(detail: str) -> bytes:
    data = detail.encode()
    return data if len(data) <= _DETAIL_MAX else data[: _DETAIL_MAX - 3] + b"..."
