"""The ingestion service (a real process) against the real broker."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from confluent_kafka import Message, Producer

from shared import samples
from shared.kafka.config import producer_config
from shared.net import free_port
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.client.producer import SampleProducer
from streamlearn.v1 import ingest_pb2, ingest_pb2_grpc, sample_pb2, stream_pb2
from tests.helpers import read_all, read_to_end, record_count, wait_until

BINARY = stream_pb2.StreamDefinition(
    name="clicks", dense_dim=4, label_kind=stream_pb2.LABEL_KIND_BINARY
)


@dataclass
class Topics:
    raw: str
    train: str
    dlq: str
    streams: str


@pytest.fixture
def topics(make_topic: Callable[..., str]) -> Topics:
    return Topics(
        make_topic(3, "raw"), make_topic(3, "train"), make_topic(3, "dlq"), make_topic(1, "streams")
    )


class Ingestion:
    """`python -m services.ingestion` on the test's topics; restartable, killable."""

    def __init__(self, kafka: KafkaSettings, topics: Topics, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.env = {
            "INGESTION_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "INGESTION_TOPICS__RAW": topics.raw,
            "INGESTION_TOPICS__TRAIN": topics.train,
            "INGESTION_TOPICS__DLQ": topics.dlq,
            "INGESTION_TOPICS__STREAMS": topics.streams,
            "INGESTION_CONSUMER_GROUP": f"ingestion-{topics.raw}",
            "INGESTION_GRPC_PORT": str(self.port),
            "INGESTION_METRICS_PORT": "0",
            "INGESTION_COMMIT_INTERVAL_S": "0.5",
            "INGESTION_MAX_MESSAGE_BYTES": "100000",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Ingestion:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.ingestion"],
                env=os.environ | self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture
def ingestion(kafka: KafkaSettings, topics: Topics, tmp_path: Path) -> Iterator[Ingestion]:
    service = Ingestion(kafka, topics, tmp_path / "ingestion.log")
    yield service
    if service.process is not None and service.process.poll() is None:
        service.kill()


def sample(i: int, key: str, **overrides: object) -> sample_pb2.Sample:
    fields: dict[str, object] = {
        "schema_version": 1,
        "event_id": f"e{i}",
        "key": key,
        "stream": "clicks",
        "dense": [float(i), 1.0, 2.0, 3.0],
        "class_index": i % 2,
    }
    fields.update(overrides)
    message = sample_pb2.Sample(**fields)  # type: ignore[arg-type]
    message.event_time.GetCurrentTime()
    return message


def event_ids(message: Message) -> list[str]:
    headers = samples.headers_of(message)
    if samples.is_batch(headers):
        return list(sample_pb2.SampleBatch.FromString(message.value() or b"").event_ids)
    return [(samples.header(headers, samples.EVENT_ID) or b"").decode()]


def test_valid_samples_arrive_in_order_per_key_and_every_bad_one_as_a_dead_letter(
    kafka: KafkaSettings, topics: Topics, ingestion: Ingestion
) -> None:
    ingestion.start()
    # The stream is defined while the service runs: no restart needed.
    publish_definition(kafka, topics.streams, BINARY)
    valid = [sample(i, f"user-{i % 5}") for i in range(300)]
    future = sample(900, "x")
    future.event_time.FromSeconds(future.event_time.seconds + 86_400)
    ancient = sample(901, "x")
    ancient.event_time.FromSeconds(1_000_000)
    malformed = {
        "undecodable": [b"\x00garbage\xff\xff", valid[0].SerializeToString()[:10]],
        "unknown_stream": [sample(902, "x", stream="nope").SerializeToString()],
        "wrong_dimension": [sample(903, "x", dense=[1.0]).SerializeToString()],
        "non_finite": [sample(904, "x", dense=[float("nan"), 0, 0, 0]).SerializeToString(),
                       sample(905, "x", dense=[float("inf"), 0, 0, 0]).SerializeToString()],
        "label_out_of_range": [sample(906, "x", class_index=2).SerializeToString()],
        "oversized": [sample(907, "x", text="x" * 200_000).SerializeToString()],
        "future_timestamp": [future.SerializeToString()],
        "ancient_timestamp": [ancient.SerializeToString()],
    }  # fmt: skip
    producer = Producer(producer_config(kafka))
    for message in valid:
        producer.produce(topics.raw, message.SerializeToString(), message.key.encode())
    for values in malformed.values():
        for value in values:
            producer.produce(topics.raw, value, b"x")
    for message in valid[:50]:  # a producer replaying a batch it was unsure about
        producer.produce(topics.raw, message.SerializeToString(), message.key.encode())
    assert producer.flush(30) == 0

    trained = read_all(kafka, topics.train, len(valid), timeout=90)
    dead = read_all(kafka, topics.dlq, 60, timeout=60)
    ids = [event_ids(m)[0] for m in trained]
    assert sorted(ids) == sorted(m.event_id for m in valid)  # all once: no duplicates
    for key in {m.key for m in valid}:
        received = [
            int(i[1:]) for m, i in zip(trained, ids, strict=True) if m.key() == key.encode()
        ]
        assert received == sorted(received), f"order of {key} broken"
    reasons = Counter(samples.header(samples.headers_of(m), samples.REASON).decode() for m in dead)  # type: ignore[union-attr]
    expected = Counter({reason: len(values) for reason, values in malformed.items()})
    expected["duplicate"] = 50
    assert reasons == expected
    for m in dead:
        source = samples.header(samples.headers_of(m), samples.SOURCE) or b""
        assert source.decode().startswith(f"{topics.raw}:{m.partition()}:")
    assert ingestion.stop() == 0  # SIGTERM drains and exits cleanly


def test_killed_mid_stream_every_event_ends_up_exactly_once_in_training_or_dead_letters(
    kafka: KafkaSettings, topics: Topics, ingestion: Ingestion
) -> None:
    publish_definition(kafka, topics.streams, BINARY)
    rng = np.random.default_rng(11)
    expected_ids: list[str] = []
    with SampleProducer(kafka=kafka, topic=topics.raw, stream="clicks") as producer:
        # Single samples, one in ten invalid: enough that a kill at the 4,000th record lands
        # mid-stream even when this waiter runs late on a loaded machine (ingestion routes
        # tens of thousands a second).
        for i in range(30_000):
            bad = {"dense": [1.0]} if i % 10 == 0 else {}
            producer.send(sample(i, f"k{i % 13}", **bad))
            expected_ids.append(f"e{i}")
        for b in range(40):  # batches of 100 rows, some rows NaN
            x = rng.normal(size=(100, 4)).astype(np.float32)
            x[rng.random(100) < 0.05, 0] = np.nan
            ids = [f"b{b}-{r}" for r in range(100)]
            producer.send_columns(x, np.arange(100) % 2, keys=[f"k{b % 13}"] * 100, event_ids=ids)
            expected_ids += ids
        total = len(expected_ids)
    kills = sorted(random.Random(3).sample(range(300, 4_000), 3))
    for target in kills:
        ingestion.start()
        wait_until(lambda t=target: _records(kafka, topics) >= t, 120, pause=0.01)
        ingestion.kill()
        assert len(_routed(kafka, topics)) < total  # killed mid-stream
    ingestion.start()
    wait_until(lambda: len(_routed(kafka, topics)) >= total, 180, pause=1.0)
    assert ingestion.stop() == 0
    seen = Counter(_routed(kafka, topics))
    assert set(seen) == set(expected_ids)
    assert [i for i, n in seen.items() if n > 1] == []  # nothing routed twice
    dead = read_to_end(kafka, topics.dlq)
    assert sum(len(event_ids(m)) for m in dead) >= 3_000  # the invalid ones are dead letters


def _records(kafka: KafkaSettings, topics: Topics) -> int:
    return record_count(kafka, topics.train) + record_count(kafka, topics.dlq)


def _routed(kafka: KafkaSettings, topics: Topics) -> list[str]:
    """Event ids in training and dead letters so far (rows of batches one each)."""
    return [
        i for t in (topics.train, topics.dlq) for m in read_to_end(kafka, t) for i in event_ids(m)
    ]


def test_grpc_ingest_acknowledges_written_samples_and_refuses_invalid_ones_whole(
    kafka: KafkaSettings, topics: Topics, ingestion: Ingestion
) -> None:
    publish_definition(kafka, topics.streams, BINARY)
    ingestion.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{ingestion.port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    stub = ingest_pb2_grpc.IngestionStub(channel)  # type: ignore[no-untyped-call]

    reply = stub.Ingest(ingest_pb2.IngestRequest(samples=[sample(i, "a") for i in range(10)]))
    assert (reply.accepted, reply.records) == (10, 10)
    assert reply.last_positions[0].topic == topics.raw

    batch = sample_pb2.SampleBatch.FromString(
        samples.encode_batch(samples.Columns(
            "clicks", [f"s{i}" for i in range(20)], ["b"] * 20, np.zeros(20, np.int64),
            np.ones((20, 4), np.float32), np.zeros(20, np.int32), np.ones(20, np.float32)))
    )  # fmt: skip
    requests = [ingest_pb2.IngestRequest(samples=[sample(100 + i, "c")]) for i in range(5)]
    reply = stub.IngestStream(iter([*requests, ingest_pb2.IngestRequest(batch=batch)]))
    assert (reply.accepted, reply.records) == (25, 6)

    with pytest.raises(grpc.RpcError) as refused:
        stub.Ingest(
            ingest_pb2.IngestRequest(samples=[sample(200, "d"), sample(201, "d", dense=[1.0])])
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wrong_dimension" in (refused.value.details() or "")

    trained = read_all(kafka, topics.train, 16, timeout=60)
    ids = sorted(i for m in trained for i in event_ids(m))
    assert len(ids) == 35 and "e200" not in ids  # the refused request wrote nothing
    channel.close()
