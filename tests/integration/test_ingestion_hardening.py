"""Hardening of the ingestion service against the real broker (issue 13)."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewPartitions,
)

from services.ingestion.dedup import PartitionMemory
from services.ingestion.engine import output_producer_config
from services.ingestion.limits import record_size
from services.ingestion.router import Output, RawRecord, Router
from services.ingestion.settings import IngestionSettings
from services.ingestion.validation import TimeLimits
from services.ingestion.worker import build_app
from shared import samples
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import producer_config
from shared.kafka.producer import DeliveryReport
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from tests.helpers import read_all, read_to_end, record_count, wait_until
from tests.integration.test_ingestion_service import BINARY, Ingestion, Topics, event_ids, sample

MIB = 1024 * 1024


def _topics(make_topic: Callable[..., str], partitions: int) -> Topics:
    return Topics(
        make_topic(partitions, "raw"),
        make_topic(partitions, "train"),
        make_topic(partitions, "dlq"),
        make_topic(1, "streams"),
    )


@pytest.fixture
def service(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Callable[[Topics], Ingestion]]:
    started: list[Ingestion] = []

    def make(topics: Topics) -> Ingestion:
        ingestion = Ingestion(kafka, topics, tmp_path / "ingestion.log")
        ingestion.env["INGESTION_METADATA_MAX_AGE_S"] = "1"
        started.append(ingestion)
        return ingestion

    yield make
    for ingestion in started:
        if ingestion.process is not None and ingestion.process.poll() is None:
            ingestion.kill()


def _produce(kafka: KafkaSettings, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = Producer(producer_config(kafka, message_max_bytes=2 * MIB))
    for value in values:
        producer.produce(topic, value, b"k", partition=partition)
    assert producer.flush(30) == 0


def _set_max_message_bytes(admin: AdminClient, topic: str, size: int) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    resource.set_config("max.message.bytes", str(size))
    for future in admin.alter_configs([resource]).values():  # a test topic: all its configs
        future.result(timeout=30)


def test_a_record_just_under_the_1_mib_limit_reaches_training(
    kafka: KafkaSettings, make_topic: Callable[..., str], service: Callable[[Topics], Ingestion]
) -> None:
    topics = _topics(make_topic, 1)
    publish_definition(kafka, topics.streams, BINARY)
    ingestion = service(topics)
    del ingestion.env["INGESTION_MAX_MESSAGE_BYTES"]  # the default: 1 MiB
    ingestion.start()
    big = sample(1, "k", text="x" * 1_020_000)  # above faust's default max_request_size
    _produce(kafka, topics.raw, [big.SerializeToString(), sample(2, "k").SerializeToString()])
    trained = read_all(kafka, topics.train, 2, timeout=90)
    assert [event_ids(m)[0] for m in trained] == ["e1", "e2"]
    assert ingestion.stop() == 0


def test_start_up_refuses_outputs_that_accept_less_than_the_limit(
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    make_topic: Callable[..., str],
    service: Callable[[Topics], Ingestion],
) -> None:
    topics = _topics(make_topic, 1)
    small = f"{topics.dlq}.small"
    ensure_topics(kafka_admin, [TopicSpec(small, 1, config={"max.message.bytes": "50000"})])
    topics.dlq = small
    ingestion = service(topics).start()  # its limit: 100,000 bytes
    assert ingestion.process is not None
    assert ingestion.process.wait(90) != 0
    log = ingestion.log.read_text()
    assert "max.message.bytes" in log and small in log


def test_an_output_the_broker_refuses_stops_the_worker_and_its_input_is_not_committed(
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    make_topic: Callable[..., str],
    service: Callable[[Topics], Ingestion],
) -> None:
    topics = _topics(make_topic, 1)
    publish_definition(kafka, topics.streams, BINARY)
    ingestion = service(topics).start()
    _produce(kafka, topics.raw, [sample(1, "k").SerializeToString()])
    read_all(kafka, topics.train, 1, timeout=90)
    # The dead-letter topic shrinks behind the service's back: the next dead letter fails.
    _set_max_message_bytes(kafka_admin, topics.dlq, 20_000)
    # Random text: the producer compresses (lz4), and a repetitive value would fit.
    noise = random.Random(2).randbytes(30_000).hex()
    invalid = sample(2, "k", dense=[1.0], text=noise).SerializeToString()
    _produce(kafka, topics.raw, [invalid, sample(3, "k").SerializeToString()])
    assert ingestion.process is not None
    assert ingestion.process.wait(120) != 0  # stopped itself, did not carry on
    assert read_to_end(kafka, topics.dlq) == []

    _set_max_message_bytes(kafka_admin, topics.dlq, 1_048_588)
    ingestion.start()  # the uncommitted input is redelivered
    [dead] = read_all(kafka, topics.dlq, 1, timeout=90)
    headers = samples.headers_of(dead)
    assert samples.header(headers, samples.REASON) == b"wrong_dimension"
    trained = read_all(kafka, topics.train, 2, timeout=90)
    assert sorted(event_ids(m)[0] for m in trained) == ["e1", "e3"]
    assert ingestion.stop() == 0


def _grow(admin: AdminClient, topics: list[str], partitions: int) -> None:
    for future in admin.create_partitions([NewPartitions(t, partitions) for t in topics]).values():
        future.result(timeout=30)
    wait_until(lambda: all(len(admin.list_topics(t).topics[t].partitions) == partitions
                           for t in topics), 30)  # fmt: skip


def test_a_raw_partition_the_outputs_lack_is_held_until_an_operator_adds_theirs(
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    make_topic: Callable[..., str],
    service: Callable[[Topics], Ingestion],
) -> None:
    topics = _topics(make_topic, 1)
    publish_definition(kafka, topics.streams, BINARY)
    ingestion = service(topics).start()  # INGESTION_GROW_OUTPUTS: off by default
    _produce(kafka, topics.raw, [sample(1, "k").SerializeToString()])
    read_all(kafka, topics.train, 1, timeout=90)

    _grow(kafka_admin, [topics.raw], 2)
    _produce(kafka, topics.raw, [sample(2, "k").SerializeToString()], partition=1)
    wait_until(lambda: "INGESTION_GROW_OUTPUTS" in ingestion.log.read_text(), 60, pause=0.5)
    # Held, not routed, and the outputs were not touched; the other partition goes on.
    _produce(kafka, topics.raw, [sample(3, "k").SerializeToString()], partition=0)
    wait_until(lambda: record_count(kafka, topics.train) >= 2, 60, pause=0.5)
    outputs = kafka_admin.list_topics(timeout=15).topics
    assert len(outputs[topics.train].partitions) == len(outputs[topics.dlq].partitions) == 1
    assert sorted(event_ids(m)[0] for m in read_to_end(kafka, topics.train)) == ["e1", "e3"]

    _grow(kafka_admin, [topics.train, topics.dlq], 2)  # the operator's part
    wait_until(lambda: record_count(kafka, topics.train) >= 3, 120, pause=0.5)
    trained = read_to_end(kafka, topics.train)
    assert sorted(event_ids(m)[0] for m in trained) == ["e1", "e2", "e3"]  # e2 once
    assert {m.partition() for m in trained if event_ids(m) == ["e2"]} == {1}  # kept
    assert read_to_end(kafka, topics.dlq) == []
    assert ingestion.process is not None and ingestion.process.poll() is None
    assert ingestion.stop() == 0


def test_with_grow_outputs_a_partition_added_to_the_raw_topic_at_run_time_is_routed(
    kafka: KafkaSettings,
    kafka_admin: AdminClient,
    make_topic: Callable[..., str],
    service: Callable[[Topics], Ingestion],
) -> None:
    topics = _topics(make_topic, 1)
    publish_definition(kafka, topics.streams, BINARY)
    ingestion = service(topics)
    ingestion.env["INGESTION_GROW_OUTPUTS"] = "true"
    ingestion.start()
    _produce(kafka, topics.raw, [sample(1, "k").SerializeToString()])
    read_all(kafka, topics.train, 1, timeout=90)

    _grow(kafka_admin, [topics.raw], 2)
    _produce(kafka, topics.raw, [sample(2, "k").SerializeToString()], partition=1)

    # (a reader subscribed now would not see the partition added to train for minutes)
    wait_until(lambda: record_count(kafka, topics.train) >= 2, 120, pause=0.5)
    trained = read_to_end(kafka, topics.train)
    assert sorted(event_ids(m)[0] for m in trained) == ["e1", "e2"]
    assert {m.partition() for m in trained if event_ids(m) == ["e2"]} == {1}  # kept
    outputs = kafka_admin.list_topics(timeout=15).topics
    assert len(outputs[topics.dlq].partitions) == 2
    assert ingestion.process is not None and ingestion.process.poll() is None
    assert ingestion.stop() == 0


@pytest.mark.parametrize("engine", ["kafka", "faust"])
def test_the_engine_producer_writes_a_record_of_the_router_s_largest_output_size(
    kafka: KafkaSettings, kafka_admin: AdminClient, engine: str
) -> None:
    # The default limit (1 MiB) is above faust's default max_request_size (1,000,000): the
    # largest output the router may write must pass the engine's own producer and the broker
    # (failed deliveries are the only ones reported: none may come).
    report = DeliveryReport()
    topic = f"test.largest-output.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_admin, [TopicSpec(topic, 1, config={"max.message.bytes": str(2 * MIB)})])
    settings = IngestionSettings(kafka=kafka)
    limit = settings.max_message_bytes
    router = Router(lambda _n, _t: None, TimeLimits(0, 1), limit)
    raw = RawRecord("raw", 0, 0, b"k", b"\xff" * 2 * limit, [("trace", b"t" * 100)])
    [out] = router.route(raw, PartitionMemory(60))
    assert record_size(out.key, out.value, out.headers) == limit  # cut to exactly the limit
    if engine == "kafka":
        producer = Producer(output_producer_config(settings) | {"on_delivery": report})
        producer.produce(topic, out.value, out.key, 0, headers=list(out.headers))
        assert producer.flush(30) == 0
        assert report.failed == []
    else:
        _produce_with_faust(settings, router, topic, out)
    [written] = read_to_end(kafka, topic)
    assert written.value() == out.value


def _produce_with_faust(
    settings: IngestionSettings, router: Router, topic: str, out: Output
) -> None:
    app = build_app(settings, router, threading.Event())

    async def produce() -> None:
        await app.producer.start()
        try:
            await app.producer.send_and_wait(
                topic, out.key, out.value, partition=0, timestamp=None, headers=out.headers
            )
        finally:
            await app.producer.stop()

    asyncio.run(produce())
