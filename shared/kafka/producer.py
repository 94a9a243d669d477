"""Producing with delivery reports surfaced to the caller, and a flush that cannot be forgotten."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from shared.errors import Unavailable

log = logging.getLogger(__name__)


class Flushable(Protocol):
    """What `delivering` needs of a producer (confluent_kafka.Producer, or the fake)."""

    def flush(self, timeout: float = -1) -> int: ...


@dataclass
class DeliveryReport:
    """Counts delivered and failed records; keeps the first failures for the error message."""

    delivered: int = 0
    failed: list[str] = field(default_factory=list)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        """The `on_delivery` callback librdkafka calls from `poll`/`flush`."""
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def raise_for_failures(self) -> None:
        """Raise Unavailable when any record was not acknowledged by the broker."""
        if self.failed:
            shown = "; ".join(self.failed[:3])
            raise Unavailable(f"{len(self.failed)} record(s) not delivered: {shown}")


@contextmanager
def delivering(producer: Flushable, flush_timeout: float = 30.0) -> Iterator[DeliveryReport]:
    """Produce inside the block with `on_delivery=report`; on exit flush and check every report.

    Example:
        with delivering(producer) as report:
            producer.produce(topic, value, key, on_delivery=report)
            producer.poll(0)

    """
    report = DeliveryReport()
    try:
        yield report
    finally:
        remaining = producer.flush(flush_timeout)
        if remaining:
            log.error("flush left records undelivered", extra={"remaining": remaining})
    if remaining:
        raise Unavailable(f"{remaining} record(s) still queued after {flush_timeout:.0f}s flush")
    report.raise_for_failures()


def produce(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    *,
    serve: bool = True,
    **kwargs: Any,
) -> None:
    """Produce one record, waiting (serving delivery reports) while the local queue is full.

    librdkafka raises BufferError instead of blocking when its queue is full; a fast
    producer must let deliveries drain and try again rather than drop the record.
    `serve` False leaves the reports already due to a later call (see `ServeThrottle`).
    """
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            break
        except BufferError:
            producer.poll(0.05)
    if serve:
        producer.poll(0)


class ServeThrottle:
    """Says when a producer of many records should serve its delivery reports.

    Serving them after every record (`poll(0)`, the usual pattern) cost the SDK's sender
    a third of its time per record at 50,000 records/s; a record's report cannot come
    before its batch is sent (`linger.ms`) anyway. At most once per `every_s`, so a slow
    sender still serves them at every record, and a fast one about a thousand times a second.
    """

    def __init__(self, every_s: float = 0.001, clock: Callable[[], float] = time.monotonic) -> None:
        """Serve at most once per `every_s` seconds of `clock`."""
        self._every_s = every_s
        self._clock = clock
        self._next = -math.inf

    def due(self) -> bool:
        """Whether to serve now (and if so, not again for `every_s`)."""
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every_s
        return True
