"""Rebuild a partition's de-duplication memory from the output topics (Kafka adapter).

The outputs are the ground truth of what was routed: a crashed run may have written the
outputs of inputs whose offsets it never committed. Reading back the training and dead-letter
partitions over the de-duplication window tells exactly which inputs those were (their
`streamlearn-source` headers) and which event ids were accepted, so a restart routes every
input exactly once and still catches producers' duplicates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition

from services.ingestion.dedup import PartitionMemory
from services.ingestion.router import WHOLE
from shared import samples
from shared.kafka.config import consumer_config
from shared.kafka.consumer import read_until
from shared.settings import KafkaSettings
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)


def recover(
    kafka: KafkaSettings,
    group: str,
    outputs: tuple[str, str],
    source: tuple[str, int],
    window_s: float,
    max_ids: int = 3_000_000,
) -> PartitionMemory:
    """The memory of raw partition `source` = (topic, partition) for consumer group `group`.

    One consumer asks for the group's committed offset (where redelivery will start) and reads
    the outputs back. It only assigns partitions and never commits, so the group is untouched.

    Args:
        kafka: Connection settings.
        group: The ingestion consumer group.
        outputs: The training and dead-letter topics (partition-preserving).
        source: Raw topic and partition.
        window_s: The de-duplication window, and so how far back to read.
        max_ids: The most event ids the memory keeps.

    """
    memory = PartitionMemory(window_s, max_ids)
    consumer = Consumer(consumer_config(kafka, group, enable_auto_commit=False))
    try:
        [tp] = consumer.committed([TopicPartition(*source)], timeout=15)
        resume_at = (*source, max(tp.offset, 0))
        started, read = time.monotonic(), 0
        for batch in _read_window(consumer, outputs, source[1], window_s):
            read += len(batch)
            for msg in batch:
                _remember(memory, msg, outputs[0], resume_at)
        log.info(
            "recovered partition memory",
            extra={
                "partition": source[1],
                "outputs_read": read,
                "event_ids": len(memory),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
    finally:
        consumer.close()
    return memory


def _read_window(
    consumer: Consumer, topics: tuple[str, str], partition: int, window_s: float
) -> Iterator[list[Message]]:
    since_ms = int((time.time() - window_s) * 1000)
    wanted = [TopicPartition(t, partition, since_ms) for t in topics]
    starts = consumer.offsets_for_times(wanted, timeout=15)
    ends = {
        (t, partition): consumer.get_watermark_offsets(TopicPartition(t, partition), timeout=15)[1]
        for t in topics
    }
    todo = [tp for tp in starts if 0 <= tp.offset < ends[(tp.topic, partition)]]
    if todo:
        consumer.assign(todo)
        yield from read_until(
            consumer, {(tp.topic, partition): ends[(tp.topic, partition)] for tp in todo}, 1000
        )


def _remember(
    memory: PartitionMemory, msg: Message, train: str, source: tuple[str, int, int]
) -> None:
    headers = samples.headers_of(msg)
    origin = (samples.header(headers, samples.SOURCE) or b"").decode().rsplit(":", 2)
    if len(origin) != 3 or (origin[0], int(origin[1])) != source[:2]:
        return
    offset = int(origin[2])
    rows_header = samples.header(headers, samples.ROWS)
    rows = np.frombuffer(rows_header, dtype="<i4").tolist() if rows_header else [WHOLE]
    if offset >= source[2]:
        for row in rows:
            memory.mark_routed_before(offset, row)
    if msg.topic() == train:
        at_s = msg.timestamp()[1] / 1000
        for event_id in _event_ids(msg, headers):
            memory.accept(event_id, offset, at_s)


def _event_ids(msg: Message, headers: samples.Headers) -> list[str]:
    if samples.is_batch(headers):
        return list(sample_pb2.SampleBatch.FromString(msg.value() or b"").event_ids)
    event_id = samples.header(headers, samples.EVENT_ID)
    return [event_id.decode()] if event_id else []
