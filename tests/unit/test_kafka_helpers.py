"""Kafka helpers against the in-memory fakes (the real broker is in tests/integration)."""

from __future__ import annotations

import threading

import pytest

from shared.errors import Unavailable
from shared.fakes import FakeBroker, FakeConsumer, FakeProducer
from shared.kafka.admin import standard_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import (
    consume_batches,
    consume_ready,
    next_offsets,
    store_processed,
    where,
)
from shared.kafka.producer import ServeThrottle, delivering, produce
from shared.settings import KafkaSettings, TopicSettings


def test_producer_config_is_idempotent_and_waits_for_all_replicas() -> None:
    config = producer_config(KafkaSettings(), transactional_id="t-1", linger_ms=20)
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["transactional.id"] == "t-1"
    assert config["linger.ms"] == 20


def test_consumer_config_never_stores_offsets_by_itself() -> None:
    config = consumer_config(KafkaSettings(), "g")
    assert config["enable.auto.offset.store"] is False
    assert config["isolation.level"] == "read_committed"


def test_standard_topics_follow_settings() -> None:
    specs = {s.name: s for s in standard_topics(TopicSettings(partitions=6, retention_ms=1000))}
    assert specs["streamlearn.samples.train"].partitions == 6
    assert specs["streamlearn.samples.raw"].config["retention.ms"] == "1000"
    assert specs["streamlearn.model.events"].partitions == 1
    assert specs["streamlearn.streams"].config["cleanup.policy"] == "compact"


def test_delivering_surfaces_failed_deliveries() -> None:
    producer = FakeProducer(FakeBroker())
    with pytest.raises(Unavailable, match="1 record"), delivering(producer) as report:
        producer.produce("missing-topic", b"v", b"k", on_delivery=report)


def test_delivering_counts_acknowledged_records() -> None:
    broker = FakeBroker()
    broker.create_topic("t", 2)
    producer = FakeProducer(broker)
    with delivering(producer) as report:
        for i in range(10):
            producer.produce("t", b"v", f"k{i % 3}".encode(), on_delivery=report)
    assert report.delivered == 10
    assert len(broker.records("t")) == 10


def test_next_offsets_are_last_plus_one_per_partition() -> None:
    broker = FakeBroker()
    broker.create_topic("t", 2)
    msgs = [broker.append("t", None, b"x", partition=i % 2) for i in range(5)]
    assert [(tp.partition, tp.offset) for tp in next_offsets(msgs)] == [(0, 3), (1, 2)]
    assert where(msgs[4]) == "t[0]@2"


def test_stored_offsets_resume_a_new_consumer_after_the_processed_batch() -> None:
    broker = FakeBroker()
    broker.create_topic("t", 1)
    for i in range(10):
        broker.append("t", b"k", str(i).encode())
    first = FakeConsumer(broker, "g")
    first.subscribe(["t"])
    stop = threading.Event()
    batch = next(consume_batches(first, stop, batch_size=4))
    store_processed(first, batch)
    first.commit()
    second = FakeConsumer(broker, "g")
    second.subscribe(["t"])
    assert [m.value() for m in second.consume(100)] == [str(i).encode() for i in range(4, 10)]


def test_consume_ready_takes_what_has_arrived_up_to_the_limit() -> None:
    broker = FakeBroker()
    broker.create_topic("t", 1)
    consumer = FakeConsumer(broker, "g")
    consumer.subscribe(["t"])
    assert consume_ready(consumer, 100, 0.01) == []
    for i in range(7):
        broker.append("t", b"k", str(i).encode())
    assert [m.value() for m in consume_ready(consumer, 5, 1.0)] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.value() for m in consume_ready(consumer, 100, 1.0)] == [b"5", b"6"]
    assert consume_ready(consumer, 1, 0.01) == []


def test_produce_serves_due_reports_unless_told_to_leave_them_to_a_later_call() -> None:
    broker = FakeBroker()
    broker.create_topic("t")
    producer = FakeProducer(broker)
    reported: list[bytes] = []

    def report(err: object, msg: object) -> None:
        reported.append(msg.value())  # type: ignore[attr-defined]

    produce(producer, "t", b"a", on_delivery=report, serve=False)  # type: ignore[arg-type]
    assert reported == [] and len(producer) == 1
    produce(producer, "t", b"b", on_delivery=report)  # type: ignore[arg-type]
    assert reported == [b"a", b"b"] and len(producer) == 0


def test_serve_throttle_serves_at_most_once_per_interval() -> None:
    now = [100.0]
    throttle = ServeThrottle(every_s=0.001, clock=lambda: now[0])
    assert throttle.due()  # the first record serves at once
    assert not throttle.due()  # a burst within the millisecond leaves them for later
    now[0] += 0.0005
    assert not throttle.due()
    now[0] += 0.0006
    assert throttle.due()
    now[0] += 5.0  # a slow sender serves at every record
    assert throttle.due()
    now[0] += 5.0
    assert throttle.due()
