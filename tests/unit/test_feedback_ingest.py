"""gRPC Ingest takes feedback: checked, keyed by event id, acknowledged, counted; an invalid
one is INVALID_ARGUMENT and nothing of its request is written."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from services.ingestion.publisher import RawPublisher
from services.ingestion.router import Router
from services.ingestion.servicer import IngestionServicer
from services.ingestion.validation import TimeLimits
from shared import samples
from shared.fakes import FakeBroker, FakeProducer
from shared.feedback import Feedback, Label, decode_feedback
from streamlearn.v1 import feedback_pb2, ingest_pb2, sample_pb2, stream_pb2

NOW_MS = int(time.time() * 1000)
CLICKS = stream_pb2.StreamDefinition(
    name="clicks", dense_dim=2, label_kind=stream_pb2.LABEL_KIND_BINARY
)
RAW, FEEDBACK = "raw", "feedback"


@pytest.fixture
def broker() -> FakeBroker:
    fake = FakeBroker()
    fake.create_topic(RAW, 3)
    fake.create_topic(FEEDBACK, 3)
    return fake


@pytest.fixture
def servicer(broker: FakeBroker) -> Iterator[IngestionServicer]:
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    router = Router(lambda name, _at: CLICKS if name == "clicks" else None, limits, 100_000)
    publisher = RawPublisher(FakeProducer(broker), RAW, timeout_s=5)  # type: ignore[arg-type]
    yield IngestionServicer(router, publisher, FEEDBACK)
    publisher.close()


class Aborted(Exception):
    """What `AbortingContext.abort` raises, as grpc's does."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class AbortingContext:
    """The servicer context's `abort`: what a refused call ends with."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


CONTEXT: grpc.ServicerContext = AbortingContext()


def stamp(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def feedback(
    event_id: str, classes: list[int] | None = None, **fields: object
) -> feedback_pb2.Feedback:
    """A valid feedback (class 1, now), with `fields` set over it."""
    message = feedback_pb2.Feedback(
        schema_version=1, event_id=event_id, stream="clicks", event_time=stamp(NOW_MS)
    )
    message.class_index = 1
    if classes is not None:
        message.multi_label.classes[:] = classes
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def sample(event_id: str) -> sample_pb2.Sample:
    message = sample_pb2.Sample(
        schema_version=1, event_id=event_id, key="k", stream="clicks", dense=[1.0, 2.0]
    )
    message.class_index = 0
    message.event_time.CopyFrom(stamp(NOW_MS))
    return message


def test_feedback_is_published_keyed_by_event_id_and_counted(
    servicer: IngestionServicer, broker: FakeBroker
) -> None:
    request = ingest_pb2.IngestRequest(
        feedback=[feedback("e-1"), feedback("e-2", regression=2.5, weight=3.0)]
    )
    reply = servicer.Ingest(request, CONTEXT)
    assert (reply.accepted, reply.records, reply.feedback) == (0, 0, 2)
    written = broker.records(FEEDBACK)
    assert sorted(m.key() or b"" for m in written) == [b"e-1", b"e-2"]
    decoded = {decode_feedback(m.value() or b"").event_id: decode_feedback(m.value() or b"")
               for m in written}  # fmt: skip
    assert decoded["e-1"] == Feedback("e-1", "clicks", Label.class_index(1), NOW_MS)
    assert decoded["e-2"] == Feedback("e-2", "clicks", Label.regression(2.5), NOW_MS, 3.0)
    assert broker.records(RAW) == []
    assert {p.topic for p in reply.last_positions} == {FEEDBACK}


def test_samples_a_batch_and_feedback_in_one_request(
    servicer: IngestionServicer, broker: FakeBroker
) -> None:
    columns = samples.Columns(
        "clicks",
        ["b-1", "b-2"],
        ["k", "k"],
        np.array([NOW_MS, NOW_MS], np.int64),
        np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        np.array([0, 1]),
        np.ones(2, np.float32),
    )
    batch = sample_pb2.SampleBatch.FromString(samples.encode_batch(columns))
    request = ingest_pb2.IngestRequest(
        samples=[sample("s-1")], batch=batch, feedback=[feedback("e-1", classes=[0, 2])]
    )
    reply = servicer.Ingest(request, CONTEXT)
    assert (reply.accepted, reply.records, reply.feedback) == (3, 2, 1)
    assert len(broker.records(RAW)) == 2
    (message,) = broker.records(FEEDBACK)
    assert decode_feedback(message.value() or b"").label == Label.multi_label([0, 2])
    assert {p.topic for p in reply.last_positions} == {RAW, FEEDBACK}


def test_a_stream_of_requests_counts_feedback_of_all(
    servicer: IngestionServicer, broker: FakeBroker
) -> None:
    requests = [
        ingest_pb2.IngestRequest(feedback=[feedback("e-1")]),
        ingest_pb2.IngestRequest(samples=[sample("s-1")], feedback=[feedback("e-2")]),
    ]
    reply = servicer.IngestStream(iter(requests), CONTEXT)
    assert (reply.accepted, reply.records, reply.feedback) == (1, 1, 2)
    assert len(broker.records(FEEDBACK)) == 2


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (feedback(""), "missing_event_id"),
        (feedback("e-9", stream=""), "missing_stream"),
        (feedback("x" * 300), "oversized_name"),
        (feedback("e-9", schema_version=7), "unsupported_schema"),
        (feedback("e-9", weight=-1.0), "invalid_weight"),
        (feedback("e-9", regression=float("nan")), "non_finite"),
        (feedback("e-9", class_index=-4), "label_out_of_range"),
        (feedback("e-9", classes=[1, 1]), "label_out_of_range"),
        (feedback_pb2.Feedback(schema_version=1, event_id="e-9", stream="clicks"), "missing_label"),
    ],
)
def test_invalid_feedback_is_refused_and_nothing_of_the_request_is_written(
    servicer: IngestionServicer, broker: FakeBroker, bad: feedback_pb2.Feedback, reason: str
) -> None:
    request = ingest_pb2.IngestRequest(samples=[sample("s-1")], feedback=[feedback("e-1"), bad])
    with pytest.raises(Aborted, match=f"request 0, feedback 1: {reason}") as refused:
        servicer.Ingest(request, CONTEXT)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert broker.records(RAW) == [] and broker.records(FEEDBACK) == []


def test_feedback_without_an_event_time_is_refused(
    servicer: IngestionServicer, broker: FakeBroker
) -> None:
    timeless = feedback("e-1")
    timeless.ClearField("event_time")
    with pytest.raises(Aborted, match="INVALID_ARGUMENT: request 0, feedback 0: missing_time"):
        servicer.Ingest(ingest_pb2.IngestRequest(feedback=[timeless]), CONTEXT)
    assert broker.records(FEEDBACK) == []


def test_an_invalid_sample_still_refuses_the_feedback_beside_it(
    servicer: IngestionServicer, broker: FakeBroker
) -> None:
    unknown = sample("s-1")
    unknown.stream = "nobody-defined-this"
    request = ingest_pb2.IngestRequest(samples=[unknown], feedback=[feedback("e-1")])
    with pytest.raises(Aborted, match="INVALID_ARGUMENT: request 0, record 0"):
        servicer.Ingest(request, CONTEXT)
    assert broker.records(FEEDBACK) == []
