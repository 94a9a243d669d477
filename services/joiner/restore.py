"""Reading a partition's state back from the changelog topic (Kafka adapter)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from shared.errors import Unavailable
from shared.kafka.config import consumer_config
from shared.settings import KafkaSettings

Records = list[tuple[bytes | None, bytes | None]]


def read_changelog(
    kafka: KafkaSettings, topic: str, partitions: list[int], timeout: float = 60.0
) -> dict[int, Records]:
    """Every committed (key, value) record of some changelog partitions, oldest first.

    Reads with `read_committed` up to the end a reader can reach, which the broker reports
    as each partition's end (EOF): records of aborted transactions (a crashed predecessor's,
    aborted when this instance's producer fenced it) are skipped, and so is the abort
    marker that ends them, which is why the end is not compared with offsets. The
    partitions are read together, by one consumer.

    Raises:
        Unavailable: The end was not reached within `timeout` seconds.

    """
    consumer = Consumer(
        consumer_config(
            kafka,
            f"streamlearn-joiner-restore-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            enable_partition_eof=True,
            isolation_level="read_committed",
            fetch_wait_max_ms=50,  # a restore waits on every fetch that finds nothing new
        )
    )
    records: dict[int, Records] = {p: [] for p in partitions}
    pending = set(partitions)
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.2):
                error, partition = msg.error(), msg.partition() or 0
                if error is None:
                    records[partition].append((msg.key(), msg.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif error.fatal():
                    raise KafkaException(error)
    finally:
        consumer.close()
    if pending:
        raise Unavailable(
            f"changelog {topic} partitions {sorted(pending)} not read to their end "
            f"within {timeout:.0f}s"
        )
    return records
