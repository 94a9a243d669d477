"""Topic slices: which records a replay reads, resolved to offsets, and reading them (Kafka).

A replay never joins or commits a consumer group: it assigns partitions directly, so live
consumers and their offsets are untouched. Records of several partitions are merged by
timestamp (ties by partition, then offset), so a slice reads the same way every time.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from shared.errors import InvalidArgument, NotFound
from shared.kafka.config import consumer_config
from shared.kafka.consumer import read_until
from shared.settings import KafkaSettings


@dataclass(frozen=True)
class SliceSpec:
    """What to read: a topic, some partitions, and bounds by offset or by time (ms)."""

    topic: str
    partitions: tuple[int, ...] = ()
    from_offset: int | None = None
    to_offset: int | None = None  # exclusive
    from_time_ms: int | None = None
    to_time_ms: int | None = None  # exclusive


@dataclass(frozen=True)
class Slice:
    """A resolved slice: per partition, the offsets [start, end) to read."""

    topic: str
    ranges: dict[int, tuple[int, int]]

    def __len__(self) -> int:
        return sum(end - start for start, end in self.ranges.values())

    def describe(self) -> str:
        """E.g. `clicks[0]@0..1000, clicks[1]@5..900`."""
        return ", ".join(f"{self.topic}[{p}]@{s}..{e}" for p, (s, e) in sorted(self.ranges.items()))


class SliceReader:
    """One consumer without a group that resolves slices and reads them (one connection)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._consumer = _consumer(kafka)

    def __enter__(self) -> SliceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()

    def resolve(self, spec: SliceSpec) -> Slice:
        """Offsets of `spec`; InvalidArgument/NotFound with a clear message if it is unreadable."""
        partitions = _partitions(self._consumer, spec)
        ranges = {p: _bounds(self._consumer, spec, p) for p in partitions}
        ranges = {p: r for p, r in ranges.items() if r[1] > r[0]}
        if not ranges and spec.from_time_ms is not None:
            raise InvalidArgument(
                f"no record of {spec.topic} at or after {spec.from_time_ms} ms: past its end"
            )
        if not ranges:
            raise InvalidArgument(
                f"the slice of {spec.topic} is empty (no records between the bounds)"
            )
        return Slice(spec.topic, ranges)

    def read(self, piece: Slice, chunk: int = 5000) -> Iterator[list[Message]]:
        """The records in chunks, merged across partitions by (timestamp, partition, offset)."""
        consumer = self._consumer
        consumer.assign([TopicPartition(piece.topic, p, s) for p, (s, _) in piece.ranges.items()])
        try:
            if len(piece.ranges) == 1:  # one partition is already in order: no merging
                [(partition, (_, end))] = piece.ranges.items()
                yield from read_until(consumer, {(piece.topic, partition): end}, chunk, 0.2)
                return
            out: list[Message] = []
            for msg in _merged(consumer, piece):
                out.append(msg)
                if len(out) >= chunk:
                    yield out
                    out = []
            if out:
                yield out
        finally:
            consumer.unassign()


def resolve(kafka: KafkaSettings, spec: SliceSpec) -> Slice:
    """`SliceReader.resolve` on a consumer of its own."""
    with SliceReader(kafka) as reader:
        return reader.resolve(spec)


def read(kafka: KafkaSettings, piece: Slice, chunk: int = 5000) -> Iterator[list[Message]]:
    """`SliceReader.read` on a consumer of its own."""
    with SliceReader(kafka) as reader:
        yield from reader.read(piece, chunk)


def _merged(consumer: Consumer, piece: Slice) -> Iterator[Message]:
    buffers: dict[int, deque[Message]] = {p: deque() for p in piece.ranges}
    positions = {p: s for p, (s, _) in piece.ranges.items()}

    def starving() -> bool:  # an unfinished partition without a buffered record
        return any(not buffers[p] and positions[p] < end for p, (_, end) in piece.ranges.items())

    while True:
        while starving():
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition() or 0, msg.offset() or 0
                if offset < piece.ranges[p][1]:
                    buffers[p].append(msg)
                positions[p] = offset + 1
        heads = [(b[0].timestamp()[1], p, b[0].offset() or 0) for p, b in buffers.items() if b]
        if not heads:
            return
        yield buffers[min(heads)[1]].popleft()


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer(
        consumer_config(
            kafka,
            f"streamlearn-replay-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            # as the trainer: 1 MiB fetches cap a busy reader near 150k records/s on 2 cores
            max_partition_fetch_bytes=32 * 1024 * 1024,
        )
    )


def _partitions(consumer: Consumer, spec: SliceSpec) -> list[int]:
    # librdkafka answers a fresh handle's first metadata request only after ~50 ms; asking
    # for partition 0's offsets first brings the connection up at once (an unknown topic
    # just fails here and is reported by the metadata request below).
    with contextlib.suppress(KafkaException):
        consumer.get_watermark_offsets(TopicPartition(spec.topic, 0), 15)
    try:
        metadata = consumer.list_topics(spec.topic, timeout=15).topics.get(spec.topic)
    except KafkaException as exc:
        raise NotFound(f"topic {spec.topic!r}: {exc.args[0].str()}") from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise NotFound(f"no topic named {spec.topic!r}")
    known = sorted(metadata.partitions)
    unknown = [p for p in spec.partitions if p not in known]
    if unknown:
        raise InvalidArgument(f"{spec.topic} has partitions {known}, not {unknown}")
    return list(spec.partitions) or known


def _bounds(consumer: Consumer, spec: SliceSpec, partition: int) -> tuple[int, int]:
    low, high = consumer.get_watermark_offsets(TopicPartition(spec.topic, partition), 15)
    start = max(low, spec.from_offset if spec.from_offset is not None else low)
    end = min(high, spec.to_offset if spec.to_offset is not None else high)
    if spec.from_time_ms is not None:
        at = _offset_at(consumer, spec.topic, partition, spec.from_time_ms)
        start = max(start, high if at < 0 else at)
    if spec.to_time_ms is not None:
        at = _offset_at(consumer, spec.topic, partition, spec.to_time_ms)
        end = min(end, high if at < 0 else at)
    return start, max(start, end)


def _offset_at(consumer: Consumer, topic: str, partition: int, time_ms: int) -> int:
    [found] = consumer.offsets_for_times([TopicPartition(topic, partition, time_ms)], timeout=15)
    return found.offset or -1
