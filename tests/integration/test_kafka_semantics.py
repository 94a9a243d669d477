"""The delivery guarantees streamlearn builds on, shown against the real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from shared.kafka.config import consumer_config, producer_config
from shared.kafka.consumer import consume_batches, consume_ready, group_lag, store_processed
from shared.kafka.producer import delivering
from shared.kafka.transactions import transact_batch
from shared.settings import KafkaSettings
from tests.helpers import read_all


def _produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for key, value in records:
            producer.produce(topic, value, key, on_delivery=report)
            producer.poll(0)
    return report.delivered


def test_keyed_idempotent_producer_keeps_per_key_order_without_duplicates(
    kafka: KafkaSettings, topic: str
) -> None:
    records = [(f"key-{i % 7}".encode(), f"{i % 7}:{i // 7}".encode()) for i in range(2100)]
    assert _produce(kafka, topic, records) == 2100
    got = read_all(kafka, topic, 2100)
    assert len(got) == 2100
    sequences: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for msg in got:
        sequences[msg.key()].append(int(msg.value().split(b":")[1]))
        partitions[msg.key()].add(msg.partition())
    assert all(seq == list(range(300)) for seq in sequences.values())
    assert all(len(p) == 1 for p in partitions.values())  # a key lives in one partition
    assert len({p for ps in partitions.values() for p in ps}) > 1  # keys spread out


def _consume_some(
    kafka: KafkaSettings, topic: str, group: str, count: int, store: bool
) -> list[Message]:
    """Consume `count` records in `group`; store their offsets only if `store`; close."""
    consumer = Consumer(consumer_config(kafka, group))
    consumer.subscribe([topic])
    taken: list[Message] = []
    stop = threading.Event()
    try:
        for batch in consume_batches(consumer, stop, batch_size=count - len(taken)):
            taken += batch
            if store:
                store_processed(consumer, batch)
            if len(taken) >= count:
                stop.set()
    finally:
        consumer.close()  # commits what was stored, nothing else
    return taken


def test_consumer_group_resumes_after_the_last_stored_offset(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(1)
    _produce(kafka, topic, [(b"k", str(i).encode()) for i in range(100)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    first = _consume_some(kafka, topic, group, 40, store=True)
    assert [int(m.value()) for m in first] == list(range(40))
    # Consumed but never stored (processing "crashed"): delivered again, not lost.
    unstored = _consume_some(kafka, topic, group, 10, store=False)
    assert [int(m.value()) for m in unstored] == list(range(40, 50))
    rest = _consume_some(kafka, topic, group, 60, store=True)
    assert [int(m.value()) for m in rest] == list(range(40, 100))


def _uppercase_to(
    out_topic: str,
) -> Callable[[Message], list[tuple[str, bytes | None, bytes, None]]]:
    return lambda msg: [(out_topic, msg.key(), msg.value().upper(), None)]


def test_transactional_consume_transform_produce_is_exactly_once_across_an_abort(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    source, sink = make_topic(2, "in"), make_topic(2, "out")
    _produce(kafka, source, [(f"k{i % 5}".encode(), f"v{i}".encode()) for i in range(200)])
    group, txn_id = f"g-{uuid.uuid4().hex[:6]}", f"txn-{uuid.uuid4().hex[:6]}"

    # A first worker processes a batch but dies before committing: its transaction aborts.
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    consumer.subscribe([source])
    producer = Producer(producer_config(kafka, transactional_id=txn_id))
    producer.init_transactions(30)
    batch = next(consume_batches(consumer, threading.Event(), batch_size=50))
    producer.begin_transaction()
    for topic, key, value, _ in (o for m in batch for o in _uppercase_to(sink)(m)):
        producer.produce(topic, value, key)
    producer.flush(30)
    producer.abort_transaction(30)
    aborted = len(batch)
    consumer.close()

    # Its replacement (same transactional id: fences the old one) does the whole input.
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    consumer.subscribe([source])
    producer = Producer(producer_config(kafka, transactional_id=txn_id))
    producer.init_transactions(30)
    done, stop = 0, threading.Event()
    for batch in consume_batches(consumer, stop, batch_size=64):
        done += len(batch)
        transact_batch(producer, consumer, batch, _uppercase_to(sink))
        if done >= 200:
            stop.set()
    committed = consumer.committed(consumer.assignment(), timeout=10)
    consumer.close()

    out = read_all(kafka, sink, 200, isolation_level="read_committed")
    assert sorted(m.value() for m in out) == sorted(f"V{i}".encode() for i in range(200))
    assert sum(tp.offset for tp in committed) == 200  # input offsets moved with the outputs
    uncommitted = read_all(
        kafka, sink, 200 + aborted, timeout=10, isolation_level="read_uncommitted"
    )
    assert aborted > 0
    assert (
        len(uncommitted) == 200 + aborted
    )  # aborted records exist, invisible to committed readers


def test_group_lag_counts_what_the_group_has_not_committed(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    topic, group = make_topic(2), f"lag-{uuid.uuid4().hex[:8]}"
    assert _produce(kafka, topic, [(f"k{i}".encode(), b"v") for i in range(40)]) == 40
    probe = Consumer(consumer_config(kafka, group))
    try:
        assert group_lag(probe, topic) == 40  # nothing committed: all of it
        taken = _consume_some(kafka, topic, group, 15, store=True)
        assert group_lag(probe, topic) == 40 - len(taken)
    finally:
        probe.close()


def test_consume_ready_returns_a_trickled_record_without_waiting_out_the_timeout(
    kafka: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(1)
    consumer = Consumer(consumer_config(kafka, f"ready-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    later = threading.Timer(0.3, lambda: _produce(kafka, topic, [(b"k", b"one")]))
    try:
        later.start()
        started = time.monotonic()
        got = consume_ready(consumer, 100, 20.0)
        waited = time.monotonic() - started
    finally:
        later.join()
        consumer.close()
    assert [m.value() for m in got] == [b"one"]
    assert waited < 10.0  # `consume(100, 20.0)` would hold the one record for all 20 s
