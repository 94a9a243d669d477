"""Feedback reaches the feedback topic of the real broker: from the SDK, and from gRPC Ingest
(served over a real channel) acknowledged before the answer; invalid feedback writes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from confluent_kafka import Producer

from services.ingestion.names import SERVICE
from services.ingestion.publisher import RawPublisher
from services.ingestion.router import Router
from services.ingestion.servicer import IngestionServicer
from services.ingestion.validation import TimeLimits
from shared.feedback import Feedback, Label, decode_feedback
from shared.grpc.server import ServiceBinding, build_server
from shared.kafka.config import producer_config
from shared.settings import KafkaSettings
from streamlearn.client.producer import SampleProducer
from streamlearn.v1 import feedback_pb2, ingest_pb2, ingest_pb2_grpc, sample_pb2, stream_pb2
from tests.helpers import read_all, read_to_end, record_count

CLICKS = stream_pb2.StreamDefinition(
    name="clicks", dense_dim=2, label_kind=stream_pb2.LABEL_KIND_BINARY
)


@dataclass(frozen=True)
class Front:
    """gRPC Ingest on a real server, writing to this test's topics."""

    stub: ingest_pb2_grpc.IngestionStub
    raw: str
    feedback: str


@pytest.fixture
def front(kafka: KafkaSettings, make_topic: Callable[..., str]) -> Iterator[Front]:
    raw, feedback = make_topic(3, "raw"), make_topic(3, "feedback")
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    router = Router(lambda name, _at: CLICKS if name == "clicks" else None, limits, 100_000)
    publisher = RawPublisher(Producer(producer_config(kafka)), raw)
    binding = ServiceBinding(
        ingest_pb2_grpc.add_IngestionServicer_to_server,
        IngestionServicer(router, publisher, feedback),
        SERVICE,
    )
    server, _, port = build_server("127.0.0.1:0", [binding])
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = ingest_pb2_grpc.IngestionStub(channel)  # type: ignore[no-untyped-call]
        yield Front(stub, raw, feedback)
    finally:
        channel.close()
        server.stop(None)
        publisher.close()


def test_feedback_from_the_sdk_is_read_back_as_sent(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(3, "feedback")
    now_s = time.time()
    with SampleProducer(kafka=kafka, stream="clicks", feedback_topic=topic) as producer:
        producer.feedback("e-1", label=1, event_time=now_s)
        producer.feedback("e-2", "prices", label=12.5, event_time=now_s, weight=2.0)
        producer.feedback("e-3", label=[0, 4], event_time=now_s)
    assert producer.feedback_delivered == 3 and producer.delivered == 0
    messages = read_all(kafka, topic, 3)
    assert len(messages) == 3
    received = {(m.key() or b"").decode(): decode_feedback(m.value() or b"") for m in messages}
    ms = round(now_s * 1000)
    assert received == {
        "e-1": Feedback("e-1", "clicks", Label.class_index(1), ms),
        "e-2": Feedback("e-2", "prices", Label.regression(12.5), ms, 2.0),
        "e-3": Feedback("e-3", "clicks", Label.multi_label([0, 4]), ms),
    }


def _feedback(event_id: str, **fields: object) -> feedback_pb2.Feedback:
    message = feedback_pb2.Feedback(schema_version=1, event_id=event_id, stream="clicks")
    message.event_time.GetCurrentTime()
    message.class_index = 1
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def _sample(event_id: str) -> sample_pb2.Sample:
    message = sample_pb2.Sample(
        schema_version=1, event_id=event_id, key="k", stream="clicks", dense=[1.0, 2.0]
    )
    message.class_index = 0
    message.event_time.GetCurrentTime()
    return message


def test_grpc_ingest_publishes_feedback_before_it_answers(
    kafka: KafkaSettings, front: Front
) -> None:
    request = ingest_pb2.IngestRequest(
        samples=[_sample("s-1")], feedback=[_feedback("e-1"), _feedback("e-2", regression=0.5)]
    )
    reply = front.stub.Ingest(request, timeout=30)
    assert (reply.accepted, reply.records, reply.feedback) == (1, 1, 2)
    # Acknowledged before the answer: the records are there at once, where it says.
    written = read_to_end(kafka, front.feedback)
    assert sorted(m.key() or b"" for m in written) == [b"e-1", b"e-2"]
    for message in written:
        assert decode_feedback(message.value() or b"").event_id == (message.key() or b"").decode()
    positions = {(p.topic, p.partition): p.offset for p in reply.last_positions}
    for message in written:
        assert positions[(front.feedback, message.partition() or 0)] >= (message.offset() or 0)
    assert record_count(kafka, front.raw) == 1


def test_grpc_ingest_refuses_invalid_feedback_and_writes_nothing(
    kafka: KafkaSettings, front: Front
) -> None:
    bad = _feedback("e-2", weight=-1.0)
    request = ingest_pb2.IngestRequest(samples=[_sample("s-1")], feedback=[_feedback("e-1"), bad])
    with pytest.raises(grpc.RpcError) as refused:
        front.stub.Ingest(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "feedback 1: invalid_weight" in (refused.value.details() or "")
    undecodable = ingest_pb2.IngestRequest(
        feedback=[feedback_pb2.Feedback(schema_version=1, event_id="e-3", stream="clicks")]
    )
    with pytest.raises(grpc.RpcError) as unlabeled:
        front.stub.Ingest(undecodable, timeout=30)
    assert unlabeled.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "missing_label" in (unlabeled.value.details() or "")
    assert record_count(kafka, front.feedback) == 0
    assert record_count(kafka, front.raw) == 0
