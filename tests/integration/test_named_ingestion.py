"""Named features through the SDK and the ingestion service (a real process, the real broker)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shared import samples
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.client.producer import SampleProducer, to_sample
from streamlearn.v1 import ingest_pb2, ingest_pb2_grpc, sample_pb2, stream_pb2
from tests.helpers import read_all
from tests.integration.test_ingestion_service import Ingestion, Topics, event_ids

PEOPLE = stream_pb2.StreamDefinition(
    name="people",
    dense_dim=2,
    sparse_buckets=1 << 16,
    label_kind=stream_pb2.LABEL_KIND_BINARY,
    features=stream_pb2.FeatureSchema(
        numeric=["age", "income"],
        categorical=["country", "device"],
        crosses=[stream_pb2.FeatureCross(left="country", right="device")],
    ),
)
LEGACY = stream_pb2.StreamDefinition(
    name="legacy", dense_dim=2, label_kind=stream_pb2.LABEL_KIND_BINARY
)


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> Topics:
    return Topics(
        make_topic(3, "raw"), make_topic(3, "train"), make_topic(3, "dlq"), make_topic(1, "streams")
    )


@pytest.fixture
def ingestion(kafka: KafkaSettings, topics: Topics, tmp_path: Path) -> Iterator[Ingestion]:
    service = Ingestion(kafka, topics, tmp_path / "ingestion.log")
    yield service
    if service.process is not None and service.process.poll() is None:
        service.kill()


def valid_features(i: int) -> dict[str, Any]:
    """Every field, or some left out (missing), or set to None (missing too)."""
    full: dict[str, Any] = {
        "age": 20 + i % 50,
        "income": 1000.0 * i,
        "country": ["FR", "DE", "US"][i % 3],
        "device": ["ios", "android"][i % 2],
    }
    if i % 4 == 1:
        del full["income"], full["device"]
    elif i % 4 == 2:
        full["country"] = None
    elif i % 4 == 3:
        full = {"device": full["device"]}
    return full


def test_named_samples_through_the_sdk_reach_training_or_dead_letters_with_reasons(
    kafka: KafkaSettings, topics: Topics, ingestion: Ingestion
) -> None:
    publish_definition(kafka, topics.streams, PEOPLE)
    publish_definition(kafka, topics.streams, LEGACY)
    ingestion.start()
    sent: dict[str, bytes] = {}  # event id -> the bytes the SDK wrote
    valid: list[str] = []
    bad: dict[str, list[dict[str, Any]]] = {
        "unknown_feature": [{"age": 30, "colour": "red"}, {"shoe": 42}],
        "wrong_type": [{"age": "thirty"}, {"income": "a lot", "country": "FR"}],
        "non_finite": [{"age": float("nan")}, {"income": float("inf")}],
        "oversized_category": [{"country": "x" * 2000}],
    }

    def send(producer: SampleProducer, event_id: str, message: sample_pb2.Sample) -> None:
        message.event_id = event_id
        sent[event_id] = message.SerializeToString()
        producer.send(message)

    with SampleProducer(kafka=kafka, topic=topics.raw, stream="people") as producer:
        for i in range(200):
            fields = {"key": f"u{i % 7}", "features": valid_features(i), "label": i % 2}
            send(producer, f"v{i}", to_sample(fields, "people"))
            valid.append(f"v{i}")
        positional = to_sample({"key": "p", "features": [31.0, 1000.0], "label": 1}, "people")
        send(producer, "positional", positional)  # dense_dim == len(numeric): still valid
        valid.append("positional")
        for reason, cases in bad.items():
            for n, features in enumerate(cases):
                send(producer, f"{reason}-{n}", to_sample({"features": features, "label": 0}))
        schema_less = to_sample({"features": {"age": 30}, "label": 1}, "legacy")
        send(producer, "no_feature_schema-0", schema_less)
        mixed = to_sample({"features": {"age": 30}, "label": 1}, "people")
        mixed.dense.extend([1.0, 2.0])  # the SDK refuses this; a hand-made protobuf may not
        send(producer, "mixed_features-0", mixed)
        producer.flush()
    assert producer.delivered == len(sent)

    rejected = len(sent) - len(valid)
    trained = read_all(kafka, topics.train, len(valid), timeout=90)
    dead = read_all(kafka, topics.dlq, rejected, timeout=60)
    trained_ids = [i for m in trained for i in event_ids(m)]
    assert sorted(trained_ids) == sorted(valid)  # each valid one once, none of the others
    for message in trained:  # forwarded as the SDK wrote them: featurizing is the trainer's
        assert message.value() == sent[event_ids(message)[0]]
    reasons = {
        event_ids(m)[0]: (samples.header(samples.headers_of(m), samples.REASON) or b"").decode()
        for m in dead
    }
    assert len(reasons) == len(dead) == rejected  # nothing lost, nothing twice
    for event_id, reason in reasons.items():
        assert event_id.rsplit("-", 1)[0] == reason, (event_id, reason)
        assert dead_detail(dead, event_id)
    assert Counter(reasons.values()) == Counter(
        {**{r: len(c) for r, c in bad.items()}, "no_feature_schema": 1, "mixed_features": 1}
    )
    assert "'colour'" in dead_detail(dead, "unknown_feature-0")
    assert "'age'" in dead_detail(dead, "wrong_type-0")

    channel = grpc.insecure_channel(f"127.0.0.1:{ingestion.port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    stub = ingest_pb2_grpc.IngestionStub(channel)  # type: ignore[no-untyped-call]
    good = to_sample({"event_id": "g1", "features": {"age": 1, "country": "FR"}, "label": 1})
    good.stream = "people"
    assert stub.Ingest(ingest_pb2.IngestRequest(samples=[good])).accepted == 1
    with pytest.raises(grpc.RpcError) as refused:
        stub.Ingest(ingest_pb2.IngestRequest(samples=[sample_with(colour="red")]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown_feature" in (refused.value.details() or "")
    channel.close()
    assert ingestion.stop() == 0


def sample_with(**features: Any) -> sample_pb2.Sample:
    message = to_sample({"event_id": "g2", "features": features, "label": 1})
    message.stream = "people"
    return message


def dead_detail(dead: list[Any], event_id: str) -> str:
    [message] = [m for m in dead if event_ids(m)[0] == event_id]
    return (samples.header(samples.headers_of(message), samples.DETAIL) or b"").decode()
