"""Consume loops with manual offset storage after processing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)


class ConsumerLike(Protocol):
    """The part of confluent_kafka.Consumer streamlearn uses (the fakes implement it too)."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...
    def poll(self, timeout: float = -1) -> Message | None: ...
    def store_offsets(
        self, message: Message | None = None, offsets: list[TopicPartition] | None = None
    ) -> None: ...


def where(msg: Message) -> str:
    """`topic[partition]@offset`, the way streamlearn logs a record's position."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def consume_ready(
    consumer: ConsumerLike, max_messages: int, timeout: float, linger: float = 0.0
) -> list[Message]:
    """Wait up to `timeout` for a first record, then take what arrives within `linger`.

    `consume(n, timeout)` returns early only once it has `n` records: with fewer it waits out
    the whole timeout, which a trickle pays as latency on every call (measured: a single
    record returned 1.2-1.7 s late from `consume(100, 2.0)`, at once from this). A short
    `linger` lets a consumer that is catching up still take large batches.
    """
    return [
        m for run, _ in consume_stamped(consumer, max_messages, timeout, linger, _zero) for m in run
    ]


def _zero() -> int:
    return 0


def consume_stamped(
    consumer: ConsumerLike,
    max_messages: int,
    timeout: float,
    linger: float,
    clock: Callable[[], int],
) -> list[tuple[list[Message], int]]:
    """`consume_ready` as runs: the records of each call, with `clock()` read right after it.

    Rebalance callbacks run inside `poll`/`consume`: a record returned by an earlier call
    than a (re)assignment of its partition predates it (the partition may since have been
    re-positioned, and the record will be read again). With `clock` counting assignments,
    the caller can tell such records from those of the current assignment; librdkafka
    itself drops outdated records within one call. One stamp per call, not per record: a
    tuple per record cost 5% of a trainer's loop at 400k records/s.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    runs = [([first], clock())]
    if max_messages > 1:
        rest = consumer.consume(max_messages - 1, linger)
        now = clock()
        if rest:
            runs.append((rest, now))
    return runs


def consume_batches(
    consumer: ConsumerLike,
    stop: threading.Event,
    batch_size: int = 500,
    timeout: float = 0.2,
) -> Iterator[list[Message]]:
    """Yield non-empty batches of records until `stop` is set.

    `consume()` fetches many records per call, which is far cheaper than `poll()` per record.
    Transient client errors are logged and skipped; fatal ones raise.
    """
    while not stop.is_set():
        batch = []
        for msg in consume_ready(consumer, batch_size, timeout):
            error = msg.error()
            if error is None:
                batch.append(msg)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": error.str()})
        if batch:
            yield batch


def next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after processing `batch`: last offset + 1 per partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in batch:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError(f"not a consumed record: {msg!r}")  # error events have no position
        last[(topic, partition)] = offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def high_watermarks(consumer: Any, topic: str, timeout: float = 15.0) -> dict[int, int]:
    """The next offset to be written, per partition of `topic`.

    Retries while partition leadership settles (fresh topics answer NOT_LEADER briefly).
    """
    deadline = time.monotonic() + timeout
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    marks: dict[int, int] = {}
    for partition in partitions:
        while partition not in marks:
            try:
                marks[partition] = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )[1]
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return marks


def read_until(
    consumer: ConsumerLike,
    ends: dict[tuple[str, int], int],
    batch_size: int = 5000,
    timeout: float = 1.0,
) -> Iterator[list[Message]]:
    """Batches of the assigned partitions' records until each reached its end offset.

    `ends` maps (topic, partition) to the offset to stop before; every partition in it must
    have been assigned at an earlier offset. Records at or past their end are dropped.
    """
    pending = set(ends)
    while pending:
        batch = []
        for msg in consumer.consume(batch_size, timeout):
            if msg.error() is not None:
                continue
            where_, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
            if offset < ends[where_]:
                batch.append(msg)
            if offset + 1 >= ends[where_]:
                pending.discard(where_)
        if batch:
            yield batch


def store_processed(consumer: ConsumerLike, batch: list[Message]) -> None:
    """Mark `batch` as processed: store the offsets that follow it.

    The consumer's auto-commit (see `shared.kafka.config.consumer_config`) commits only
    stored offsets, in the background, and `close()` commits the last ones; so a record is
    committed only after the application processed it (at-least-once) without paying a
    broker round trip per batch (~5-7 ms here).
    """
    consumer.store_offsets(offsets=next_offsets(batch))


def group_lag(consumer: Any, topic: str, timeout: float = 5.0) -> int:
    """Records of `topic` that the consumer's group has not committed yet (all partitions).

    `consumer` carries the group's `group.id` and must not be subscribed: asking for committed
    offsets does not join the group, so running members are not disturbed. A partition with
    no commit counts from its low watermark.
    """
    marks = high_watermarks(consumer, topic, timeout)
    committed = consumer.committed([TopicPartition(topic, p) for p in marks], timeout=timeout)
    lag = 0
    for tp in committed:
        start = tp.offset
        if start < 0:  # no commit yet: the low watermark is one more broker round trip
            start = consumer.get_watermark_offsets(tp, timeout)[0]
        lag += max(0, marks[tp.partition] - start)
    return lag
