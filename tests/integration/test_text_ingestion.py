"""Text samples through the ingestion service (a real process) and the real broker."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from shared import samples
from shared.kafka.config import producer_config
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.client.producer import SampleProducer
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.helpers import read_all
from tests.integration.test_ingestion_service import Ingestion, Topics

LIMIT = 64
STORY = stream_pb2.StreamDefinition(name="story", text=stream_pb2.TextSpec(max_bytes=LIMIT))


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


def text_sample(event_id: str, text: str, class_index: int | None = None) -> sample_pb2.Sample:
    message = sample_pb2.Sample(
        schema_version=1, event_id=event_id, key="doc", stream="story", text=text
    )
    if class_index is not None:
        message.class_index = class_index
    message.event_time.GetCurrentTime()
    return message


def with_raw_text(value: bytes, raw: bytes) -> bytes:
    """`value` with field 12 (text) appended as `raw` (shorter than 128 bytes)."""
    assert len(raw) < 128
    return value + b"\x62" + bytes([len(raw)]) + raw


def test_text_samples_are_trained_or_dead_lettered_by_reason(
    kafka: KafkaSettings, topics: Topics, ingestion: Ingestion
) -> None:
    publish_definition(kafka, topics.streams, STORY)
    ingestion.start()
    # Valid: ASCII ones (the compiled path), multi-byte ones up to exactly the limit (the
    # router's path), all sent with the SDK as dicts.
    texts = [f"sentence {i}: the cat sat on the mat" for i in range(40)]
    texts += ["é" * (LIMIT // 2), "x" * LIMIT, "日本語のテキスト"] * 5
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="story") as producer:
        for i, text in enumerate(texts):
            producer.send({"event_id": f"v{i}", "key": f"doc-{i % 4}", "text": text})
    broken = b"\xff\xfe", b"caf\xe9", b"\xed\xa0\x80", b"ok\xc3"  # not UTF-8
    batch = samples.encode_batch(
        samples.Columns(
            "story", ["b0", "b1"], ["doc", "doc"], np.full(2, int(time.time() * 1000)),
            np.zeros((2, 0), np.float32), np.zeros(2, np.int32), np.ones(2, np.float32),
        )
    )  # fmt: skip
    invalid = {
        "missing_text": [text_sample(f"m{i}", "").SerializeToString() for i in range(3)],
        "oversized_text": [
            text_sample("o1", "x" * (LIMIT + 1)).SerializeToString(),
            text_sample("o2", "€" * 22).SerializeToString(),  # 22 characters, 66 bytes
        ],
        "undecodable": [
            with_raw_text(text_sample(f"u{i}", "fine").SerializeToString(), raw)
            for i, raw in enumerate(broken)
        ],
        "unexpected_label": [text_sample("l1", "labelled", class_index=1).SerializeToString()],
    }
    raw = Producer(producer_config(kafka))
    for values in invalid.values():
        for value in values:
            raw.produce(topics.raw, value, b"doc")
    raw.produce(topics.raw, batch, b"doc", headers=[(samples.CONTENT_TYPE, samples.BATCH_TYPE)])
    assert raw.flush(30) == 0

    trained = read_all(kafka, topics.train, len(texts), timeout=90)
    dead_count = sum(map(len, invalid.values())) + 1
    dead = read_all(kafka, topics.dlq, dead_count, timeout=60)

    got = {m.value(): None for m in trained}
    assert len(trained) == len(got) == len(texts)  # each once
    decoded = sorted(sample_pb2.Sample.FromString(v or b"").text for v in got)
    assert decoded == sorted(texts)
    reasons = Counter(
        (samples.header(samples.headers_of(m), samples.REASON) or b"").decode() for m in dead
    )
    expected = Counter({reason: len(values) for reason, values in invalid.items()})
    expected["text_needs_single_samples"] = 1
    assert reasons == expected
    for m in dead:
        headers_ = samples.headers_of(m)
        detail = (samples.header(headers_, samples.DETAIL) or b"").decode()
        if samples.header(headers_, samples.REASON) == b"undecodable":
            assert "text (field 12) is not valid UTF-8" in detail
        if samples.header(headers_, samples.REASON) == b"oversized_text":
            assert f"allows {LIMIT}" in detail
    assert ingestion.stop() == 0
