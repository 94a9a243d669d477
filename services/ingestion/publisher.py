"""Publishing with acknowledgement per call (Kafka adapter of gRPC ingest).

Samples go to the raw topic, feedback to the feedback topic; one call waits for every record
it wrote, whichever topic it went to.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from shared.errors import Unavailable
from shared.kafka.producer import DeliveryReport, produce

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class _Pending(DeliveryReport):
    """The delivery reports of one call; `done` is set once every record has an answer."""

    expected: int = 0
    written: list[Message] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        super().__call__(err, msg)
        if err is None:
            self.written.append(msg)
        if self.delivered + len(self.failed) >= self.expected:
            self.done.set()


class RawPublisher:
    """An idempotent producer shared by concurrent calls, each waiting for its own records."""

    def __init__(self, producer: Producer, topic: str, timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_reports, name="ingest-reports", daemon=True
        )
        self._poller.start()

    @property
    def topic(self) -> str:
        """The raw topic: where `publish` writes by default."""
        return self._topic

    def publish(self, records: list[Record], topic: str | None = None) -> list[Message]:
        """Write `records` in order to `topic` (None: the raw topic); see `publish_to`.

        Raises:
            Unavailable: a record was refused or not acknowledged within the timeout.

        """
        return self.publish_to([(topic or self._topic, records)])

    def publish_to(self, parts: Sequence[tuple[str, list[Record]]]) -> list[Message]:
        """Write each part's records in order to its topic; return every record's position.

        Answers once the broker has acknowledged all of them, of every part.

        Raises:
            Unavailable: a record was refused or not acknowledged within the timeout.

        """
        total = sum(len(records) for _, records in parts)
        pending = _Pending(expected=total)
        if not total:
            return []
        for topic, records in parts:
            for key, value, headers in records:
                produce(self._producer, topic, value, key, headers=headers, on_delivery=pending)
        if not pending.done.wait(self._timeout_s):
            raise Unavailable(
                f"the broker did not acknowledge {total} record(s) in {self._timeout_s:.0f}s"
            )
        pending.raise_for_failures()
        return pending.written

    def close(self) -> None:
        """Deliver what is queued, then stop serving reports."""
        self._producer.flush(self._timeout_s)
        self._stop.set()
        self._poller.join(5)

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
