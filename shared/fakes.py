"""In-memory stand-ins for Kafka clients, for unit tests of code that takes a producer or consumer.

They implement the subset of confluent-kafka's API that streamlearn calls, with the same
semantics where it matters: keyed partitioning is stable, offsets are per partition and
dense, `consume` honours committed offsets, delivery callbacks run in `poll`/`flush`.
Integration tests never use these: they run against the real broker.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from shared.errors import NotFound


@dataclass
class FakeMessage:
    """A record as a consumer sees it (accessor methods, like confluent_kafka.Message)."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None
    _error: Any = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> Any:
        return self._error


@dataclass
class FakeBroker:
    """Topics as lists of partitions; committed offsets per consumer group."""

    topics: dict[str, list[list[FakeMessage]]] = field(default_factory=dict)
    committed: dict[str, dict[tuple[str, int], int]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create `name` with empty partitions (no-op when it exists)."""
        self.topics.setdefault(name, [[] for _ in range(partitions)])

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> FakeMessage:
        """Append a record; keyed records go to a stable partition, like a real partitioner."""
        if topic not in self.topics:
            raise NotFound(f"unknown topic {topic}")
        partitions = self.topics[topic]
        if partition is None:
            partition = zlib.crc32(key) % len(partitions) if key is not None else 0
        msg = FakeMessage(topic, partition, len(partitions[partition]), key, value, headers)
        partitions[partition].append(msg)
        return msg

    def records(self, topic: str) -> list[FakeMessage]:
        """Every record of `topic`, partition by partition."""
        return [m for part in self.topics[topic] for m in part]


class FakeProducer:
    """Buffers records until `poll`/`flush`, then appends them and fires delivery callbacks."""

    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker
        self._pending: list[tuple[Any, FakeMessage | None, Exception | None]] = []

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        headers: Any = None,
        partition: int = -1,
        on_delivery: Any = None,
        **_: Any,
    ) -> None:
        """Queue one record (delivered on the next poll or flush)."""
        try:
            msg = self._broker.append(
                topic, key, value, headers, None if partition < 0 else partition
            )
            self._pending.append((on_delivery, msg, None))
        except NotFound as exc:
            self._pending.append((on_delivery, FakeMessage(topic, -1, -1, key, value), exc))

    def poll(self, timeout: float = 0) -> int:
        """Fire queued delivery callbacks; returns how many ran."""
        pending, self._pending = self._pending, []
        for callback, msg, error in pending:
            if callback is not None:
                callback(_FakeError(str(error)) if error else None, msg)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        """Deliver everything; nothing stays queued."""
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self._pending)


class FakeConsumer:
    """A consumer of one group that reads assigned topics from their committed offsets."""

    def __init__(self, broker: FakeBroker, group_id: str) -> None:
        self._broker = broker
        self._group = group_id
        self._positions: dict[tuple[str, int], int] = {}
        self.stored: dict[tuple[str, int], int] = {}

    def subscribe(self, topics: list[str], **_: Any) -> None:
        """Take every partition of `topics`, starting at the group's committed offsets."""
        committed = self._broker.committed[self._group]
        for topic in topics:
            for partition in range(len(self._broker.topics[topic])):
                self._positions[(topic, partition)] = committed.get((topic, partition), 0)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        """Up to `num_messages` records past the current positions, partition by partition."""
        out: list[FakeMessage] = []
        for (topic, partition), position in self._positions.items():
            records = self._broker.topics[topic][partition][
                position : position + num_messages - len(out)
            ]
            out += records
            self._positions[(topic, partition)] = position + len(records)
        return out

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        """The next record, or None (at once: a fake has nothing to wait for)."""
        records = self.consume(1, timeout)
        return records[0] if records else None

    def store_offsets(
        self, message: Any = None, offsets: list[TopicPartition] | None = None
    ) -> None:
        """Remember offsets to commit."""
        for tp in offsets or []:
            self.stored[(tp.topic, tp.partition)] = tp.offset

    def commit(
        self,
        message: Any = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> None:
        """Make `offsets` (or the stored ones) the group's committed offsets."""
        chosen = {(tp.topic, tp.partition): tp.offset for tp in offsets} if offsets else self.stored
        self._broker.committed[self._group].update(chosen)

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class _FakeError:
    message: str

    def str(self) -> str:
        return self.message
